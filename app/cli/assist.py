"""Commands for what machines suggest: LLM drafting, reasonings and attribute weights, the sources' evidence, and
reviewing new vocabulary terms."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from app.cli.common import app, context, out, progress_bar
from curation.assist.choice import CONFIDENCE
from curation.assist.drafting import draft_images
from curation.assist.evidence import MEASURES, describe_decision, source_evidence
from curation.assist.weights import collect_reasonings, create_weight_set, list_weight_sets
from curation.labelling.vocabulary import decide_term, pending_terms


@app.command()
def draft(
    ctx: typer.Context,
    limit: int | None = typer.Option(None, help="At most this many images."),
    concurrency: int | None = typer.Option(None, help="Requests in flight at once (default: setting llm_concurrency, 8)."),
    model: str | None = typer.Option(None, help="Model name (default: SKINFLOW_LLM_MODEL)."),
    redo: bool = typer.Option(False, help="Draft again images that already have a draft from this model and prompt."),
) -> None:
    """Draft captions with an OpenAI-compatible vision model (SKINFLOW_LLM_BASE_URL, SKINFLOW_LLM_MODEL)."""
    c = context(ctx)
    wb, actor = c.workbench(), c.actor()
    with progress_bar("drafting") as progress:
        report = draft_images(wb, actor, model=model, limit=limit, concurrency=concurrency, redo=redo, progress=progress)
    out.print(
        f"drafted {report.done} of {report.todo} images in {report.seconds:.1f} s; failed {len(report.failed)}; "
        f"tokens {report.prompt_tokens} in, {report.completion_tokens} out"
        + ("" if report.structured_output else "; the server has no structured output: JSON was read from the text")
    )
    for image_id, reason in report.failed[:20]:
        out.print(f"failed image #{image_id}: {reason}")


@app.command()
def reasonings(
    ctx: typer.Context,
    limit: int | None = typer.Option(None, help="At most this many verified records."),
    concurrency: int | None = typer.Option(None, help="Requests in flight at once."),
    model: str | None = typer.Option(None, help="Model name (default: SKINFLOW_LLM_MODEL)."),
) -> None:
    """Ask the LLM for the diagnostic reasoning of each verified record (input of `weights`)."""
    c = context(ctx)
    wb, actor = c.workbench(), c.actor()
    with progress_bar("reasonings") as progress:
        report = collect_reasonings(wb, actor, model=model, limit=limit, concurrency=concurrency, progress=progress)
    out.print(f"stored {report.done} of {report.todo} reasonings in {report.seconds:.1f} s; failed {len(report.failed)}")
    for image_id, reason in report.failed[:20]:
        out.print(f"failed image #{image_id}: {reason}")


@app.command()
def weights(
    ctx: typer.Context,
    source: str = typer.Option("all", help="Which reasonings count: llm, annotator or all."),
    floor: float = typer.Option(0.01, help="Minimum weight of every field."),
    activate: bool | None = typer.Option(
        None, "--activate/--no-activate", help="Make the new set active (default: only if none is)."
    ),
    list_only: bool = typer.Option(False, "--list", help="Only list the weight sets."),
) -> None:
    """Attribute weights from reasoning frequency: a new versioned weight set."""
    c = context(ctx)
    wb = c.workbench()
    if not list_only:
        info = create_weight_set(wb, c.actor(), source=source, floor=floor, activate=activate)
        table = Table(title=f"{info.name} from {info.n_reasonings} reasonings" + (" (active)" if info.active else ""))
        for column in ("field", "mentions", "weight"):
            table.add_column(column, justify="left" if column == "field" else "right")
        for key, weight in info.weights.items():
            table.add_row(key, str(info.counts[key]), f"{weight:.4f}")
        out.print(table)
    for ws in list_weight_sets(wb):
        out.print(
            f"#{ws.id} {ws.name}{' (active)' if ws.active else ''}: {ws.n_reasonings} reasonings, source "
            f"{ws.params.get('source')}, "
            f"floor {ws.floor}",
        )


@app.command()
def sources(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Who to trust for what: each draft source's held-out agreement with verified annotations, per field and
    for the diagnosis, with the number of items; the best source per field with enough evidence (reviewer)."""
    c = context(ctx)
    report = source_evidence(c.workbench(), c.actor())
    if as_json:
        out.print_json(json.dumps(report.to_json(), default=str))
        return
    if not report.sources:
        out.print("no draft source has a usable draft on a verified image yet")
        return
    table = Table(title=f"Held-out agreement with {report.verified_images} verified images (mean, n)")
    table.add_column("measure")
    for entry in report.sources:
        table.add_column(entry.source, justify="right")
    table.add_column(f"best (n >= {report.min_evidence})")
    for measure in MEASURES:
        cells = []
        for entry in report.sources:
            score = entry.measures[measure]
            cells.append("-" if score.mean is None else f"{score.mean:.2f} ({score.n})")
        table.add_row(measure, *cells, report.chosen[measure] or "not enough evidence")
    out.print(table)
    for entry in report.sources:
        out.print(f"{entry.source}: {entry.held_out}")
    out.print(f"How each measure was decided (a source replaces the choice only when better with P >= {CONFIDENCE:.4f}):")
    for measure in MEASURES:
        out.print(f"  {measure}: {describe_decision(report, measure)}")
    for run_id in report.run_ids():
        verdicts = report.run_verdicts(run_id) or []
        kinds = ("beats", "below", "no clear difference", "not enough evidence")
        by_verdict = {kind: [v.measure for v in verdicts if v.verdict == kind] for kind in kinds}
        out.print(
            f"run #{run_id} against the source chosen among the others: "
            + "; ".join(f"{kind} on {', '.join(by_verdict[kind]) or 'nothing'}" for kind in kinds)
        )


def _field_term(value: str) -> tuple[str, str]:
    field_key, sep, term = value.partition(":")
    if not sep or not term.strip():
        raise typer.BadParameter(f"{value!r}: give FIELD:TERM, e.g. color:salmon-pink")
    return field_key.strip(), term


@app.command()
def vocabulary(
    ctx: typer.Context,
    pending: bool = typer.Option(False, "--pending", help="List the new terms waiting for a decision (the default)."),
    accept: str | None = typer.Option(None, "--accept", metavar="FIELD:TERM", help="Accept a term into the vocabulary."),
    reject: str | None = typer.Option(None, "--reject", metavar="FIELD:TERM", help="Reject a term (it leaves the list)."),
    synonyms: list[str] = typer.Option([], "--synonym", help="A synonym of the accepted term (repeat for more)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Vocabulary review (reviewer): caption terms annotators added that the vocabulary lacks; accept them (with
    synonyms) into this workbench's vocabulary or reject them."""
    c = context(ctx)
    wb, actor = c.workbench(), c.actor()
    if accept and reject:
        raise typer.BadParameter("give --accept or --reject, not both")
    if synonyms and not accept:
        raise typer.BadParameter("--synonym goes with --accept")
    if accept or reject:
        field_key, term = _field_term(accept or reject)
        row = decide_term(wb, actor, field_key, term, accept=bool(accept), synonyms=tuple(synonyms))
        also = f" with synonyms {', '.join(row.synonyms)}" if row.synonyms else ""
        out.print(f"{row.decision} {row.field}: {row.term}{also}")
        return
    terms = pending_terms(wb, actor)
    if as_json:
        out.print_json(json.dumps([t.__dict__ for t in terms]))
        return
    if not terms:
        out.print("no new terms wait for review")
        return
    table = Table(title=f"{len(terms)} new terms (accept: --accept FIELD:TERM [--synonym S]; reject: --reject FIELD:TERM)")
    for column in ("field", "term", "annotations", "images"):
        table.add_column(column, justify="right" if column == "annotations" else "left")
    for t in terms:
        table.add_row(t.field, t.term, str(t.annotations), ", ".join(f"#{i}" for i in t.image_ids))
    out.print(table)
