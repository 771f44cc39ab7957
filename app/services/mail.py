"""Invite emails over SMTP (smtplib), when TAILOR_SMTP_HOST is set; without it nothing is sent and
the owner copies the link from the page."""

from __future__ import annotations

import smtplib
from email.message import EmailMessage

from app.config import Settings


class MailError(RuntimeError):
    """The mail could not be sent; worded for the person who asked."""


def mail_configured(settings: Settings) -> bool:
    return bool(settings.smtp_host)


def invite_message(settings: Settings, to: str, link: str, workspace: str, inviter: str, role: str, hours: float) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = f"{inviter} invited you to {workspace} on Tailor"
    message["From"] = settings.smtp_from
    message["To"] = to
    message.set_content(
        f"{inviter} invited you to the Tailor workspace \u201c{workspace}\u201d as {role}.\n\n"
        f"Open this link to choose a password and join (it works once, for {hours:g} hours):\n\n{link}\n\n"
        "If you did not expect this, ignore this email.\n"
    )
    return message


def send(settings: Settings, message: EmailMessage) -> None:
    """Send one message through the configured SMTP server; MailError when that fails."""
    try:
        with smtplib.SMTP(settings.smtp_host or "", settings.smtp_port, timeout=settings.smtp_timeout_seconds) as smtp:
            if settings.smtp_starttls:
                smtp.starttls()
            if settings.smtp_username:
                smtp.login(settings.smtp_username, settings.smtp_password or "")
            smtp.send_message(message)
    except (OSError, smtplib.SMTPException) as exc:
        raise MailError(f"The email could not be sent ({exc.__class__.__name__}: {exc}); copy the link below instead.") from None
