"""
Failure notifications to a webhook (README, "Failure notifications"): when a
secret's refresh starts failing and when it recovers (tokens.refresh_health
decides that, once per change of state across every process), a JSON body is
POSTed to TOKENSERVER_WEBHOOK_URL, signed with HMAC-SHA256 under
TOKENSERVER_WEBHOOK_SECRET.

Durability: a notification is a `Notification` row, written in the same
transaction as the state change it tells; nothing is kept only in memory, so a
crash or a restart between the change and the delivery loses nothing. A
background thread (`sender`, one per process, started when a notification is
queued and by each refresher pass) sends what is due: it claims a row with a
conditional UPDATE (a lease), so two processes never send the same try, posts
it, and marks it delivered (2xx) or schedules the next try with exponential
backoff (TOKENSERVER_WEBHOOK_RETRY_BASE × 2ⁿ), giving up after
TOKENSERVER_WEBHOOK_MAX_TRIES with a warning. Delivery is at least once: a
process that dies between the receiver's answer and the row's update leaves the
row to be sent again when its lease ends; receivers tell repeats by `id`.

The request that caused a change never waits on the webhook: it only writes
the row (the thread starts when the transaction commits). The URL is checked at
start-up (tokens.checks) and again at every delivery, inside the connection
(the upstream client's guarded adapter: DNS rebinding cannot slip past).
Neither the URL (it may carry a credential) nor the secret is ever logged.
"""

import hashlib
import hmac
import json
import logging
import threading
import time
from datetime import datetime, timedelta

import requests
from django.conf import settings
from django.db import DatabaseError, connections, transaction
from django.db.models import Q
from django.utils import timezone

from tokens import upstream
from tokens.models import Notification
from tokenserver import netguard

logger = logging.getLogger(__name__)

#: The header carrying the signature: `t=<unix time>,v1=<hex HMAC-SHA256>`.
SIGNATURE_HEADER = "X-Tokenserver-Signature"
#: The longest wait between two tries, however many there were.
RETRY_CAP = 3600.0
#: The longest the sender thread sleeps before it looks at the table again (rows
#: another process claimed and then died with, rows another process queued).
IDLE_CHECK = 60.0
#: How many due notifications one pass of the sender claims.
BATCH = 100


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """
    The signature header's value: HMAC-SHA256 under `secret` of
    `<timestamp>.<body>`, so a receiver that checks the time refuses a replay.
    """
    message = str(timestamp).encode() + b"." + body
    digest = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def body_of(notification: Notification) -> bytes:
    """The bytes POSTed (and signed): the payload as compact JSON, keys sorted."""
    return json.dumps(notification.payload(), separators=(",", ":"), sort_keys=True).encode()


def notification_queue(
    *,
    realm: str,
    key: str,
    outcome: str,
    fetch_outcome: str,
    error_code: str,
    error_message: str,
    failing_since: datetime,
    attempts: int,
    at: datetime,
    calls: int | None = None,
    budget: int | None = None,
) -> Notification | None:
    """
    Queue a notification (inside the caller's transaction: the state change
    and its notification commit together) and have it sent once that
    commits. Without TOKENSERVER_WEBHOOK_URL nothing is queued (the state is
    still kept, for the console and the metric).
    """
    if not settings.TOKENSERVER_WEBHOOK_URL:
        return None
    notification = Notification.objects.create(
        realm=realm,
        key=key,
        outcome=outcome,
        fetch_outcome=fetch_outcome,
        error_code=error_code,
        error_message=error_message,
        failing_since=failing_since,
        attempts=attempts,
        created_at=at,
        next_try_at=at,
        calls=calls,
        budget=budget,
    )
    transaction.on_commit(sender.wake)
    return notification


def retry_delay(tries: int) -> float:
    """Seconds before the next try, after `tries` failed ones: base × 2^(tries − 1), capped."""
    return min(RETRY_CAP, settings.TOKENSERVER_WEBHOOK_RETRY_BASE * 2 ** (tries - 1))


def _lease() -> timedelta:
    # Longer than one delivery (its deadline is 2 × timeout), so a live sender keeps its claim.
    return timedelta(seconds=2 * settings.TOKENSERVER_WEBHOOK_TIMEOUT + 5)


def _claimable(now: datetime) -> Q:
    return Q(done=False) & (Q(claimed_until__isnull=True) | Q(claimed_until__lte=now))


def notifications_send_due(now: datetime | None = None) -> int:
    """
    Send every notification that is due and that no other process is sending
    (at most BATCH), one try each. Returns how many were claimed. Without a
    webhook configured (any more), nothing is sent: rows wait for one.
    """
    if not settings.TOKENSERVER_WEBHOOK_URL:
        return 0
    now = now or timezone.now()
    due = list(
        Notification.objects.filter(_claimable(now), next_try_at__lte=now)
        .order_by("next_try_at", "id")
        .values_list("pk", flat=True)[:BATCH]
    )
    claimed = 0
    for pk in due:
        claim_until = timezone.now() + _lease()
        won = Notification.objects.filter(
            _claimable(timezone.now()), pk=pk, next_try_at__lte=timezone.now()
        ).update(claimed_until=claim_until)
        if won:
            claimed += 1
            _send(Notification.objects.get(pk=pk), claim_until)
    return claimed


def _post(body: bytes, headers: dict) -> str | None:
    """POST to the webhook, guarded like an upstream fetch; None on 2xx, else what went wrong."""
    url = settings.TOKENSERVER_WEBHOOK_URL
    timeout = settings.TOKENSERVER_WEBHOOK_TIMEOUT
    try:
        netguard.check_url(url, resolve=False)  # the scheme; the address is checked on connect
        with requests.Session() as session, upstream.deadline(time.monotonic() + 2 * timeout):
            session.trust_env = False  # no proxy or .netrc from the environment
            session.mount("http://", upstream.GuardedAdapter())
            session.mount("https://", upstream.GuardedAdapter())
            # The answer's status is all that counts: its body is not read.
            response = session.post(
                url,
                data=body,
                headers=headers,
                timeout=(timeout, timeout),
                allow_redirects=False,
                stream=True,
            )
            response.close()
    except netguard.RefusedDestination as refused:
        return str(refused)[:300]
    except requests.RequestException as error:
        refused = netguard.find_refusal(error)
        if refused is not None:
            return str(refused)[:300]
        # Not the exception's text: it names the URL, which may carry a credential.
        return "timeout" if isinstance(error, requests.Timeout) else "unreachable"
    if 200 <= response.status_code < 300:
        return None
    return f"HTTP {response.status_code}"


def _send(notification: Notification, claim_until: datetime) -> None:
    """One try: post, then record the outcome (delivered, next try, or given up)."""
    body = body_of(notification)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "tokenserver",
        SIGNATURE_HEADER: signature(settings.TOKENSERVER_WEBHOOK_SECRET, int(time.time()), body),
    }
    error = _post(body, headers)
    now = timezone.now()
    tries = notification.tries + 1
    mine = Notification.objects.filter(pk=notification.pk, claimed_until=claim_until)
    what = f"{notification.realm}/{notification.key} {notification.outcome}"
    if error is None:
        mine.update(done=True, delivered_at=now, tries=tries, claimed_until=None, last_error="")
        logger.info("notification %d (%s) delivered", notification.pk, what)
    elif tries >= settings.TOKENSERVER_WEBHOOK_MAX_TRIES:
        mine.update(done=True, tries=tries, claimed_until=None, last_error=error)
        logger.warning(
            "notification %d (%s) given up after %d tries: %s", notification.pk, what, tries, error
        )
    else:
        delay = retry_delay(tries)
        mine.update(
            tries=tries,
            next_try_at=now + timedelta(seconds=delay),
            claimed_until=None,
            last_error=error,
        )
        logger.info(
            "notification %d (%s) not delivered (%s); try %d of %d in %.1f s",
            notification.pk,
            what,
            error,
            tries + 1,
            settings.TOKENSERVER_WEBHOOK_MAX_TRIES,
            delay,
        )


def _seconds_to_next(now: datetime) -> float | None:
    """Seconds until a pending notification may be tried (0: now); None when none is pending."""
    pending = Notification.objects.filter(done=False).order_by("next_try_at")
    rows = list(pending.values_list("next_try_at", "claimed_until")[:BATCH])
    if not rows:
        return None
    soonest = min(max(next_try, claimed or next_try) for next_try, claimed in rows)
    return max(0.0, (soonest - now).total_seconds())


def notifications_prune(age: timedelta = timedelta(days=30)) -> int:
    """Delete notifications delivered or given up more than `age` ago; how many went."""
    cutoff = timezone.now() - age
    return Notification.objects.filter(done=True, created_at__lt=cutoff).delete()[0]


class Sender:
    """
    This process's sending thread: started by `wake()`, it sends what is due,
    sleeps until the next try is due (or until woken), and ends when nothing is
    pending or the database does not answer (the rows wait; the next
    notification or refresher pass wakes it again).
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._woken = threading.Event()
        self._stopping = False
        self._thread = None

    def wake(self) -> None:
        """Look at the table now (a notification was queued, or a refresher pass ran)."""
        if not settings.TOKENSERVER_WEBHOOK_URL:
            return
        with self._lock:
            self._woken.set()
            if self._thread is None or not self._thread.is_alive():
                self._stopping = False
                self._thread = threading.Thread(target=self._run, name="notifications", daemon=True)
                self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """End the thread (after the try in flight, if any): tests, shutdown."""
        with self._lock:
            thread, self._stopping = self._thread, True
            self._woken.set()
        if thread is not None:
            thread.join(timeout)

    def idle(self) -> bool:
        """Whether the thread has ended (nothing pending, or stopped)."""
        thread = self._thread
        return thread is None or not thread.is_alive()

    def _run(self) -> None:
        try:
            while not self._stopping:
                self._woken.clear()
                notifications_send_due()
                wait = _seconds_to_next(timezone.now())
                with self._lock:
                    if wait is None and not self._woken.is_set():
                        self._thread = None
                        return
                if wait is not None:
                    self._woken.wait(min(wait, IDLE_CHECK))
        except DatabaseError as error:
            logger.warning(
                "notifications: the database did not answer (%s); pending ones wait for the "
                "next refresher pass or notification",
                type(error).__name__,
            )
        except Exception:  # a thread has no caller to raise to
            logger.exception("notifications: the sender crashed")
        finally:
            connections.close_all()


#: This process's sender.
sender = Sender()


def notifications_resume() -> None:
    """Send what is pending, in the background (the refresher calls this on every pass)."""
    sender.wake()
