"""Notifications: alerts delivered by e-mail, webhooks and (optionally) Apprise."""

from hmonitor.web.notify.senders import (
    AppriseSender,
    DeliveryError,
    EmailSender,
    Message,
    Sender,
    WebhookSender,
    check_email_address,
    webhook_from_setting,
)

__all__ = [
    "AppriseSender",
    "DeliveryError",
    "EmailSender",
    "Message",
    "Sender",
    "WebhookSender",
    "check_email_address",
    "webhook_from_setting",
]
