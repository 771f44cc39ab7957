"""Who an OpenID Connect sign-in is: the rules that turn a verified ID token's claims into a Tailor
user (the protocol itself is Authlib's, in app/web/sso.py).

- Only people whose email domain is in TAILOR_OIDC_ALLOWED_DOMAINS are signed in or created, and
  only with an email the provider has not marked unverified (`email_verified: false`).
- A returning person is found by the provider's (issuer, subject), so a changed email at the
  provider still reaches the same account; otherwise an existing account with the same email is
  linked to it (the provider vouches for the address).
- A new person joins the workspace of the earliest user with the same email domain (colleagues work
  together, and an administrator created as admin@acme.com receives acme.com's people); the first
  person of a domain gets a new workspace named after the domain, and owns it. Others join with
  TAILOR_OIDC_DEFAULT_ROLE. They get no password (SSO only; they can set one on their account page).
- Signing out of a session begun by SSO ends it at the provider too (OpenID Connect RP-Initiated
  Logout, `end_session_url`), when the provider names an end_session_endpoint and
  TAILOR_OIDC_PROVIDER_LOGOUT is on."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import SsoIdentity, User, Workspace, utcnow
from app.services import accounts


class SsoRefused(Exception):
    """The provider signed the person in, but Tailor does not let them in; worded for them."""


@dataclass(frozen=True)
class SsoClaims:
    issuer: str
    subject: str
    email: str
    email_verified: bool | None


def allowed_domains(setting: str) -> set[str]:
    return {d.strip().lower().lstrip("@") for d in setting.split(",") if d.strip()}


def _domain(email: str) -> str:
    return email.rpartition("@")[2]


def _workspace_for_domain(db: Session, domain: str) -> tuple[Workspace, bool]:
    """The workspace a new person of this domain joins, and whether it was just made for them."""
    colleague = db.scalar(
        select(User).where(User.email.endswith("@" + domain, autoescape=True)).order_by(User.created_at, User.id).limit(1)
    )
    if colleague is not None:
        return colleague.workspace, False
    workspace = Workspace(name=domain)
    db.add(workspace)
    db.flush()
    return workspace, True


def sign_in(db: Session, claims: SsoClaims, *, allowed: set[str], default_role: str) -> User:
    """The user these verified claims belong to, created on their first sign-in; raises SsoRefused."""
    email = accounts.normalise_email(claims.email or "")
    if "@" not in email:
        raise SsoRefused("Your sign-in provider did not share an email address, so Tailor cannot tell who you are.")
    if claims.email_verified is False:
        raise SsoRefused(f"Your sign-in provider has not verified {email}; verify it there and try again.")
    if _domain(email) not in allowed:
        raise SsoRefused(f"Accounts of {_domain(email)} may not sign in to Tailor with SSO. Ask your administrator.")
    identity = db.scalar(select(SsoIdentity).where(SsoIdentity.issuer == claims.issuer, SsoIdentity.subject == claims.subject))
    if identity is not None:
        user = db.get(User, identity.user_id)
        assert user is not None
    else:
        user = accounts.get_user_by_email(db, email) or _create(db, email, default_role)
        identity = SsoIdentity(user_id=user.id, issuer=claims.issuer, subject=claims.subject, email=email)
        db.add(identity)
    if user.disabled_at is not None:
        raise SsoRefused("This account is disabled. Ask your administrator.")
    identity.email = email
    identity.last_sign_in_at = utcnow()
    db.flush()
    return user


def _create(db: Session, email: str, default_role: str) -> User:
    workspace, new = _workspace_for_domain(db, _domain(email))
    user = accounts.create_user(db, email, secrets.token_urlsafe(32), workspace=workspace, role="owner" if new else default_role)
    user.password_hash = accounts.NO_PASSWORD  # signs in by SSO; may set a password later
    db.flush()
    return user


def end_session_url(endpoint: str, client_id: str, post_logout_redirect_uri: str) -> str:
    """The provider's end_session_endpoint with the RP-Initiated Logout parameters added (its own
    query kept): the client id (which the provider checks the redirect against, standing in for an
    id_token_hint) and where to send the browser afterwards."""
    parts = urlsplit(endpoint)
    query = [
        *parse_qsl(parts.query, keep_blank_values=True),
        ("client_id", client_id),
        ("post_logout_redirect_uri", post_logout_redirect_uri),
    ]
    return urlunsplit(parts._replace(query=urlencode(query)))
