"""oidc-provider-mock (the OpenID Connect provider the SSO tests run as a process) with PKCE
(RFC 7636) required: `python -m tests.oidc_pkce_provider --port N --require-nonce`.

The provider is Authlib's authorization server; it registers its authorization-code grant without
Authlib's PKCE extension and does not store a code's challenge. This adds both: the code keeps the
request's code_challenge and method, and Authlib's own `CodeChallenge` extension checks the
code_verifier at the token endpoint (BASE64URL(SHA256(verifier)) == challenge, else invalid_grant).
Stricter than RFC 7636 requires of a confidential client, an authorization request without an S256
challenge is refused, so a client that does not use PKCE cannot sign in at all."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from authlib.oauth2.rfc6749 import InvalidRequestError
from authlib.oauth2.rfc7636 import CodeChallenge
from oidc_provider_mock import _app, _storage
from oidc_provider_mock.__main__ import run


@dataclass(kw_only=True, frozen=True)
class CodeWithChallenge(_storage.AuthorizationCode):
    code_challenge: str | None = None
    code_challenge_method: str | None = None


class RequiredS256(CodeChallenge):
    def validate_code_challenge(self, grant, redirect_uri):
        data = grant.request.payload.data
        if not data.get("code_challenge") or data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("This provider requires PKCE with code_challenge_method=S256.")
        super().validate_code_challenge(grant, redirect_uri)


class GrantKeepingTheChallenge(_app.AuthorizationCodeGrant):
    def save_authorization_code(self, code, request):
        super().save_authorization_code(code, request)
        stored = _storage.storage.get_authorization_code(code)
        assert stored is not None
        _storage.storage.store_authorization_code(
            CodeWithChallenge(
                **asdict(stored),
                code_challenge=request.payload.data.get("code_challenge"),
                code_challenge_method=request.payload.data.get("code_challenge_method"),
            )
        )


class OpenIDCodeWithPkce(_app.OpenIDCode):
    def __call__(self, grant):
        super().__call__(grant)
        RequiredS256(required=True)(grant)


# The provider's set-up looks these names up when the app is made.
_app.AuthorizationCodeGrant = GrantKeepingTheChallenge  # type: ignore[misc]
_app.OpenIDCode = OpenIDCodeWithPkce  # type: ignore[misc]

if __name__ == "__main__":
    run()
