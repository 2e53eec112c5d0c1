"""A real OpenID Connect identity provider on 127.0.0.1, for the single-sign-on browser test: discovery, an
authorization endpoint that signs the next person in at once (no form), a token endpoint issuing RS256-signed
ID tokens, and the JWKS. Who signs in next is set on the server (`next_email`, `email_verified`)."""

from __future__ import annotations

import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

from joserfc import jwt  # Authlib's own JOSE library (a dependency of it)
from joserfc.jwk import RSAKey

CLIENT_ID, CLIENT_SECRET = "skinflow", "fake-client-secret"


class FakeIdentityProvider:
    def __init__(self) -> None:
        self.key = RSAKey.generate_key(2048, parameters={"kid": "test-key"})
        self.next_email = "alice@hospital.example"
        self.email_verified = True
        self.codes: dict[str, dict] = {}  # code -> claims waiting for the token request
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeIdentityProvider:
        self.thread.start()
        return self

    def __exit__(self, *_) -> None:
        self.server.shutdown()
        self.server.server_close()

    def secrets_toml(self, app_url: str) -> str:
        return (
            "[auth]\n"
            f'redirect_uri = "{app_url}/oauth2callback"\n'
            f'cookie_secret = "{secrets.token_hex(16)}"\n'
            f'client_id = "{CLIENT_ID}"\n'
            f'client_secret = "{CLIENT_SECRET}"\n'
            f'server_metadata_url = "{self.url}/.well-known/openid-configuration"\n'
            'skinflow_title = "Hospital login"\n'
        )

    def _handler(self):
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_):  # quiet
                pass

            def _json(self, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                parts = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                if parts.path == "/.well-known/openid-configuration":
                    self._json(
                        {
                            "issuer": provider.url,
                            "authorization_endpoint": f"{provider.url}/authorize",
                            "token_endpoint": f"{provider.url}/token",
                            "jwks_uri": f"{provider.url}/jwks",
                            "response_types_supported": ["code"],
                            "subject_types_supported": ["public"],
                            "id_token_signing_alg_values_supported": ["RS256"],
                            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
                        }
                    )
                elif parts.path == "/jwks":
                    self._json({"keys": [provider.key.as_dict(private=False)]})
                elif parts.path == "/authorize":
                    code = secrets.token_urlsafe(16)
                    provider.codes[code] = {
                        "email": provider.next_email,
                        "email_verified": provider.email_verified,
                        "nonce": query.get("nonce"),
                    }
                    back = f"{query['redirect_uri']}?{urlencode({'code': code, 'state': query.get('state', '')})}"
                    self.send_response(302)
                    self.send_header("Location", back)
                    self.end_headers()
                else:
                    self.send_error(404)

            def do_POST(self):
                body = parse_qs(self.rfile.read(int(self.headers.get("Content-Length", 0))).decode())
                claims = provider.codes.pop(body.get("code", [""])[0], None)
                if urlsplit(self.path).path != "/token" or claims is None:
                    self.send_error(400)
                    return
                now = int(time.time())
                id_token = jwt.encode(
                    {"alg": "RS256", "kid": "test-key"},
                    {
                        "iss": provider.url,
                        "aud": CLIENT_ID,
                        "sub": claims["email"],
                        "iat": now,
                        "exp": now + 600,
                        **{k: v for k, v in claims.items() if v is not None},
                    },
                    provider.key,
                )
                self._json(
                    {"access_token": secrets.token_urlsafe(16), "token_type": "Bearer", "expires_in": 600, "id_token": id_token}
                )

        return Handler
