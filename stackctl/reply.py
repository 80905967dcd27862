"""``make reply MSG="..."``: reply to the agent as the on-call engineer, without a phone.

Posts a WhatsApp inbound message to the running agent's ``/webhook/twilio`` exactly as Twilio
would (form-encoded, ``X-Twilio-Signature`` computed with the twilio SDK's RequestValidator), then
prints the agent's answer. The agent, token and sender come from ``run/latest/reply.json`` written
by ``make demo``; otherwise ``TWILIO_AUTH_TOKEN`` and ``ONCALL_WHATSAPP_NUMBERS`` from the environment or
``.env`` are used. ``--agent-url`` and ``--from`` override them.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import time

import httpx
from rich.console import Console
from rich.panel import Panel
from twilio.request_validator import RequestValidator

from oncall.settings import Settings
from stackctl.processes import REPO_ROOT, wait_until

console = Console()
SANDBOX_NUMBER = "whatsapp:+14155238886"  # Twilio's WhatsApp sandbox sender


def demo_defaults() -> dict:
    """What ``make demo`` recorded for replies (agent URL, sender, webhook token), or {}."""
    path = REPO_ROOT / "run" / "latest" / "reply.json"
    return json.loads(path.read_text()) if path.exists() else {}


def inbound_params(sender: str, body: str) -> dict[str, str]:
    """Form fields of a Twilio inbound WhatsApp message (Twilio Messaging webhook parameters)."""
    sid = "SM" + secrets.token_hex(16)
    return {
        "MessageSid": sid,
        "SmsMessageSid": sid,
        "SmsSid": sid,
        "AccountSid": "AC" + "0" * 32,
        "From": sender,
        "To": os.environ.get("TWILIO_WHATSAPP_FROM", SANDBOX_NUMBER),
        "Body": body,
        "NumMedia": "0",
        "NumSegments": "1",
        "ProfileName": "On-call engineer",
        "WaId": sender.split("+")[-1],
        "SmsStatus": "received",
        "ApiVersion": "2010-04-01",
    }


def send_reply(
    agent_url: str, token: str, sender: str, body: str, public_base_url: str | None = None
) -> httpx.Response:
    """POST a signed inbound message to ``agent_url``.

    The signature covers ``public_base_url`` (default ``agent_url``) + path and the form fields, as
    the agent verifies it (Twilio signs the URL it was configured with).
    """
    path = "/webhook/twilio"
    params = inbound_params(sender, body)
    signature = RequestValidator(token).compute_signature(f"{public_base_url or agent_url}{path}", params)
    return httpx.post(f"{agent_url}{path}", data=params, headers={"X-Twilio-Signature": signature}, timeout=10.0)


def wait_for_answer(
    agent_url: str, sender: str, since: float, api_token: str | None, timeout: float = 30.0
) -> list[dict]:
    """Outbound messages to ``sender`` stored by the agent after ``since`` (epoch s), polled up to ``timeout`` s
    ([] if none); the incident API is read with ``api_token`` (ONCALL_API_TOKEN)."""
    headers = {"Authorization": f"Bearer {api_token}"} if api_token else {}

    def answers() -> list[dict]:
        found: list[dict] = []
        listed = httpx.get(f"{agent_url}/incidents", headers=headers, timeout=5.0).json()["incidents"]
        for summary in listed[:5]:
            detail = httpx.get(f"{agent_url}/incidents/{summary['id']}", headers=headers, timeout=5.0).json()
            found += [
                m
                for m in detail.get("messages", [])
                if m["direction"] == "out" and m.get("to_number") == sender and m["created_at"] >= since
            ]
        return found

    try:
        return wait_until(answers, timeout, interval=0.5, what="the agent's answer")
    except TimeoutError:
        return []


def main(argv: list[str] | None = None) -> int:
    """Send the reply and print the agent's answer; exit 1 when the agent rejects it or does not answer."""
    defaults = demo_defaults()
    settings = Settings(_env_file=REPO_ROOT / ".env")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("message", help='the reply, e.g. "create a jira task and assign it to Ravi" or "#3 ack"')
    parser.add_argument("--agent-url", default=defaults.get("agent_url", "http://127.0.0.1:8088"))
    parser.add_argument(
        "--from", dest="sender", default=defaults.get("from") or next(iter(settings.oncall_whatsapp_numbers), None)
    )
    args = parser.parse_args(argv)
    token = defaults.get("token") or (
        settings.twilio_auth_token.get_secret_value() if settings.twilio_auth_token else None
    )
    if not token or not args.sender:
        console.print(
            "[red]No webhook token or sender: start the stack with `make demo` first, or set TWILIO_AUTH_TOKEN "
            "and ONCALL_WHATSAPP_NUMBERS.[/red]"
        )
        return 1
    since = time.time()
    response = send_reply(args.agent_url, token, args.sender, args.message, defaults.get("public_base_url"))
    if response.status_code != 200:
        console.print(f"[red]agent answered {response.status_code}: {response.text}[/red]")
        return 1
    console.print(f"[green]sent[/green] {args.message!r} from {args.sender}")
    api_token = defaults.get("api_token") or (
        settings.oncall_api_token.get_secret_value() if settings.oncall_api_token else None
    )
    answers = wait_for_answer(args.agent_url, args.sender, since, api_token)
    for message in answers:
        console.print(Panel(message["body"], title="agent's answer on WhatsApp", border_style="green"))
    if not answers:
        console.print("[yellow]no answer within 30 s; see the agent log in run/latest/logs/agent.log[/yellow]")
    return 0 if answers else 1


if __name__ == "__main__":
    sys.exit(main())
