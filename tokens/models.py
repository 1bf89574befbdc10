import hashlib
from datetime import timedelta

from django.db import models
from django.utils import timezone

from secret_store.models import Secret
from tokens.results import Snapshot
from tokenserver.fields import EncryptedTextField

#: How much of the margin the jitter may take: a token is refreshed between
#: `margin` and `margin × (1 − REFRESH_JITTER)` seconds before it expires.
REFRESH_JITTER = 0.5


def fingerprint(token: str) -> str:
    """A token's fingerprint: the first 8 hex digits of its SHA-256, to tell tokens apart."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()[:8]


class TokenState(models.TextChoices):
    """How a secret's token stands, as the console and the API tell it."""

    VALID = "valid"
    REFRESHING = "refreshing", "refreshing (inside its refresh margin)"
    EXPIRED = "expired"
    NEVER_FETCHED = "never_fetched", "never fetched"
    FIXED = "fixed", "fixed (realm of kind fixed)"


class StoredToken(models.Model):
    """
    The current token of one secret, as the upstream granted it: the database
    copy behind the cache, so a restart or a cache flush costs no upstream
    call. The token is encrypted at rest.

    `fetched_at` is when the upstream answered; `expires_at` counts the
    granted lifetime from when the request was sent, so it is never later
    than the provider's own expiry. `parent_fingerprint` is the fingerprint of
    the parent token a chained realm's token was fetched with: when the parent's
    token is another one, this one is refreshed ahead (tokens.chains).
    """

    secret = models.OneToOneField(
        Secret, on_delete=models.CASCADE, primary_key=True, related_name="stored_token"
    )
    token = EncryptedTextField()
    expires_at = models.DateTimeField()
    fetched_at = models.DateTimeField()
    #: When the provider issued this token, as far as tokenserver saw: the fetch that
    #: first brought it (an answer that hands back the same token keeps it). Null on rows
    #: stored before issue 14: fetched_at.
    issued_at = models.DateTimeField(null=True, blank=True)
    #: What this secret's answers showed of a provider that hands back the token it
    #: holds until late in its life (issue 14, "Same-token answers"), carried from
    #: token to token: the least lifetime left at which the same token came back (its
    #: re-issue window is below that), and the most a token had left when a new one
    #: replaced it (refreshing within that gets a new one). Null: never seen.
    same_token_left = models.PositiveIntegerField(null=True, blank=True)
    reissued_left = models.PositiveIntegerField(null=True, blank=True)
    parent_fingerprint = models.CharField(
        max_length=8,
        blank=True,
        help_text="Chained realms: the fingerprint of the parent token this one was fetched with.",
    )

    class Meta:
        verbose_name = "stored token"
        # The console's "expiring soon" list (tokens/dashboard.py).
        indexes = [models.Index(fields=["expires_at"], name="storedtoken_expires")]

    def __str__(self):
        return f"token of {self.secret_id}"

    def remaining(self, now=None) -> timedelta:
        return self.expires_at - (now or timezone.now())

    def issued(self):
        """When the provider issued this token: `issued_at`, never later than `fetched_at`."""
        if self.issued_at is None:
            return self.fetched_at
        return min(self.issued_at, self.fetched_at)

    def lifetime(self) -> float:
        """Seconds from when the provider issued this token to its expiry."""
        return (self.expires_at - self.issued()).total_seconds()

    def reissue_limit(self, configured: float | None = None) -> float | None:
        """
        How close to expiry a refresh must come for the provider to issue a new
        token, in seconds; None when nothing says it re-issues late. `configured`
        is the realm's (Realm.reissue_limit: 90 % of its reissue_window), trusted
        unless an answer contradicted it (the same token came back with less left).
        Else what the answers showed: within `reissued_left` a new token came;
        with only `same_token_left` known, half of it (each same-token answer at
        least halves the wait, so a provider that re-issues later than thought costs
        a few calls, never a loop).
        """
        seen_same, seen_new = self.same_token_left, self.reissued_left
        if configured is not None and (seen_same is None or configured < seen_same):
            return configured
        if seen_same is None:
            return None
        if seen_new is not None and seen_new < seen_same:
            return float(seen_new)
        return seen_same / 2

    def effective_margin(self, margin: float, reissue: float | None = None) -> float:
        """
        The realm's refresh margin for this token, in seconds: never more than
        half its lifetime, so a realm whose margin is longer than what its
        provider grants does not refresh on every request; and, for a provider
        that hands back the same token until late, never earlier than it
        re-issues (reissue_limit, `reissue` being the realm's configured limit).
        """
        window = min(margin, self.lifetime() / 2)
        limit = self.reissue_limit(reissue)
        if limit is not None:
            window = min(window, limit)
        return max(0.0, window)

    def refresh_at(self, margin: float, reissue: float | None = None):
        """
        When this token is due for a refresh: inside the last `margin` seconds
        of its life (`effective_margin`), at a point drawn per fetch
        (`refresh_jitter`), so tokens fetched together do not all come due together.
        """
        margin = self.effective_margin(margin, reissue)
        return self.expires_at - timedelta(
            seconds=margin * (1 - REFRESH_JITTER * self.refresh_jitter())
        )

    def state(self, margin: float, now=None, reissue: float | None = None) -> TokenState:
        """
        Expired, refreshing (inside its effective refresh margin: a refresh
        comes due somewhere in there, see refresh_at) or valid, at `now`.
        """
        left = self.remaining(now).total_seconds()
        if left <= 0:
            return TokenState.EXPIRED
        if left <= self.effective_margin(margin, reissue):
            return TokenState.REFRESHING
        return TokenState.VALID

    def fingerprint(self) -> str:
        return fingerprint(self.token)

    def refresh_jitter(self) -> float:
        """
        A number in [0, 1) fixed for this fetch: every worker and the
        refresher compute the same refresh time without sharing state.
        """
        seed = f"{self.secret_id}:{self.fetched_at.timestamp():.6f}".encode()
        digest = hashlib.blake2b(seed, digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2**64

    def snapshot(
        self, margin: float, *, lock_ttl: float = 60.0, reissue: float | None = None
    ) -> Snapshot:
        """This row as the token path reads it (source: database)."""
        return Snapshot(
            self.token,
            self.fetched_at.timestamp(),
            self.expires_at.timestamp(),
            self.refresh_at(margin, reissue).timestamp(),
            source="database",
            lock_ttl=lock_ttl,
            parent=self.parent_fingerprint,
        )


class FetchLogQuerySet(models.QuerySet):
    def of_secret(self, realm_id, key, since):
        """
        The rows of one secret, newest first. A row names its secret as text and
        outlives it: rows from before `since` (the secret's creation) belong to an
        earlier secret of that name. The arguments may be OuterRefs (a Subquery).
        """
        return self.filter(realm=realm_id, key=key, created_at__gte=since).order_by(
            "-created_at", "-id"
        )

    def prune(self, age: timedelta, *, batch_size: int = 5000) -> int:
        """Delete rows older than `age`, `batch_size` at a time (short transactions)."""
        cutoff = timezone.now() - age
        deleted = 0
        while True:
            ids = list(self.filter(created_at__lt=cutoff).values_list("id", flat=True)[:batch_size])
            if not ids:
                return deleted
            deleted += self.filter(id__in=ids).delete()[0]


class FetchLog(models.Model):
    """
    Append-only audit of upstream attempts: who caused a fetch, for which
    secret, and what the upstream answered. Realm and key are copied as text
    so the record outlives the secret. Never holds a token or a secret value.
    """

    class Trigger(models.TextChoices):
        REQUEST = "request"
        FLUSH = "flush"
        REFRESHER = "refresher"
        ADMIN = "admin"
        #: A chained realm's doing: a parent token fetched (or refreshed after a
        #: rejection) for its child, or a child refreshed ahead after its parent's
        #: token changed.
        CHAIN = "chain"

    class Outcome(models.TextChoices):
        OK = "ok"
        UPSTREAM_ERROR = "upstream_error", "Upstream refused (error in the answer)"
        INVALID_RESPONSE = "invalid_response", "Answer not understood"
        TIMEOUT = "timeout"
        UNREACHABLE = "unreachable"
        REJECTED = "rejected", "Not sent (refused before the call)"

    realm = models.CharField(max_length=50)
    key = models.CharField(max_length=100)
    trigger = models.CharField(max_length=10, choices=Trigger.choices)
    outcome = models.CharField(max_length=20, choices=Outcome.choices)
    http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    error_code = models.CharField(max_length=100, blank=True)
    error_message = models.CharField(max_length=500, blank=True)
    duration_ms = models.PositiveIntegerField(default=0)
    lifetime = models.PositiveIntegerField(
        null=True, blank=True, help_text="Granted lifetime in seconds."
    )
    client = models.CharField(max_length=150, blank=True, help_text="Who caused the fetch.")
    request_id = models.CharField(
        max_length=64,
        blank=True,
        help_text="The X-Request-ID of the request that caused it (empty for the refresher).",
    )
    same_token = models.BooleanField(
        default=False,
        help_text="The upstream handed back the token already held (its lifetime: what was "
        "left of it); issue 14, same-token answers.",
    )
    created_at = models.DateTimeField(default=timezone.now)

    objects = FetchLogQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # A secret's attempts, newest first; with the outcome, so the console finds
            # each secret's last outcome in the index alone (tokens/dashboard.py).
            models.Index(
                fields=["realm", "key", "-created_at", "outcome"], name="fetchlog_secret_last"
            ),
            # Time ranges (the console's counts and chart, prune), outcome included.
            models.Index(fields=["created_at", "outcome"], name="fetchlog_time_outcome"),
        ]

    def __str__(self):
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.realm}/{self.key} {self.outcome}"


class FetchLease(models.Model):
    """
    A database lock with an expiry: the single-flight lock of the token path
    when there is no Redis. One row per held lock; a holder that dies leaves a
    row whose `expires_at` passes, and the next taker overwrites it.
    """

    name = models.CharField(max_length=200, primary_key=True)
    holder = models.CharField(max_length=64)
    expires_at = models.DateTimeField()

    def __str__(self):
        return self.name


class RefreshHealth(models.Model):
    """
    Whether a secret's refreshes are failing, kept in the database so every
    worker process and host agrees (issue 13, "Failure notifications"). One
    row per secret that has ever been fetched; it changes state only through
    the conditional UPDATEs of tokens.refresh_health, so of several processes
    that see the same failure (or the same recovery) exactly one makes the
    transition and queues the notification. Holds error codes and scrubbed
    messages (as the fetch log does), never a token or a secret value.
    """

    class State(models.TextChoices):
        OK = "ok"
        FAILING = "failing"

    secret = models.OneToOneField(
        Secret, on_delete=models.CASCADE, primary_key=True, related_name="refresh_health"
    )
    state = models.CharField(max_length=10, choices=State.choices, default=State.OK)
    #: When the current run of failures began (None while ok).
    failing_since = models.DateTimeField(null=True, blank=True)
    #: Failed attempts (fetch-log rows) since `failing_since`; kept after a recovery,
    #: for the record, until the next failure starts a new count.
    attempts = models.PositiveIntegerField(default=0)
    last_outcome = models.CharField(max_length=20, blank=True)
    last_error_code = models.CharField(max_length=100, blank=True)
    last_error_message = models.CharField(max_length=500, blank=True)
    #: When the state last changed (failing began, or it recovered).
    changed_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = "refresh health"
        verbose_name_plural = "refresh health"
        # The failing secrets per realm (the metric, the dashboard's count).
        indexes = [models.Index(fields=["state"], name="refreshhealth_state")]

    def __str__(self):
        return f"refresh of {self.secret_id}: {self.state}"

    @property
    def failing(self) -> bool:
        return self.state == self.State.FAILING

    def label(self) -> str:
        """ "ok", or "failing since 2026-12-03 03:04:05, 3 attempts" (local time)."""
        if not self.failing:
            return "ok"
        since = timezone.localtime(self.failing_since)
        plural = "" if self.attempts == 1 else "s"
        return f"failing since {since:%Y-%m-%d %H:%M:%S}, {self.attempts} attempt{plural}"

    def error_text(self) -> str:
        """The last error as an operator reads it: "upstream_error 40013 invalid appid"."""
        return " ".join(
            filter(None, (self.last_outcome, self.last_error_code, self.last_error_message))
        )


class RememberedError(models.Model):
    """
    A permanent upstream error of one secret, remembered (issue 14, "Permanent
    errors remembered"): an answer whose code is in the realm's
    `permanent_error_codes` can only change when an operator changes
    something, so until `until` the token path answers with it (the same 502
    and detail) instead of calling the upstream again. The row is the
    authority, shared by every worker and host (tokens.permanent_errors keeps
    a copy in Redis for waiters to poll); saving the secret or its realm
    deletes it (tokens.signals). It only holds for the secret's `version` and
    the realm's `updated_at` it was fetched with, so an answer to credentials
    replaced during the call is never applied to the new ones. Holds the error
    code and the scrubbed message and detail (as the fetch log does), never a
    token or a secret value.
    """

    secret = models.OneToOneField(
        Secret, on_delete=models.CASCADE, primary_key=True, related_name="remembered_error"
    )
    secret_version = models.PositiveIntegerField()
    realm_updated_at = models.DateTimeField()
    until = models.DateTimeField()
    outcome = models.CharField(max_length=20)
    http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    error_code = models.CharField(max_length=100, blank=True)
    error_message = models.CharField(max_length=500, blank=True)
    #: The 502's detail, as the real attempt answered it.
    detail = models.TextField()
    remembered_at = models.DateTimeField(default=timezone.now)

    def __str__(self):
        return f"remembered error of {self.secret_id}: {self.error_code}"


class Notification(models.Model):
    """
    A failure notification (a secret's refresh started failing, or recovered)
    waiting to be sent to the webhook, or sent: the outbox of
    tokens.notifications. Written in the same transaction as the state change
    it tells, so no crash or restart loses it; sent by a background thread of
    whichever process claims it first (a lease, `claimed_until`), retried with
    exponential backoff, then given up. Realm and key are copied as text so
    the record outlives the secret. Never holds a token or a secret value:
    error codes and scrubbed messages, as the fetch log.
    """

    class Outcome(models.TextChoices):
        FAILING = "failing"
        RECOVERED = "recovered"
        #: The secret's daily budget of upstream calls (issue 14): past its alert
        #: threshold (error_code quota_alert) or used up (quota_exhausted).
        QUOTA = "quota"

    realm = models.CharField(max_length=50)
    key = models.CharField(max_length=100)
    outcome = models.CharField(max_length=10, choices=Outcome.choices)
    #: The failed fetch's outcome (FetchLog.Outcome), code and message: for a
    #: recovery, those of the last failure before it.
    fetch_outcome = models.CharField(max_length=20, blank=True)
    error_code = models.CharField(max_length=100, blank=True)
    error_message = models.CharField(max_length=500, blank=True)
    failing_since = models.DateTimeField()
    #: Failed attempts so far (failing) or in all (recovered).
    attempts = models.PositiveIntegerField()
    #: When the state changed.
    created_at = models.DateTimeField(default=timezone.now)
    #: Outcome quota: the calls of the provider's day so far, and the daily budget.
    calls = models.PositiveIntegerField(null=True, blank=True)
    budget = models.PositiveIntegerField(null=True, blank=True)

    # Delivery.
    tries = models.PositiveSmallIntegerField(default=0)
    next_try_at = models.DateTimeField(default=timezone.now)
    #: A sender's lease on this row: nobody else sends it before then.
    claimed_until = models.DateTimeField(null=True, blank=True)
    #: Set when sent (2xx) or given up: no further attempt.
    done = models.BooleanField(default=False)
    delivered_at = models.DateTimeField(null=True, blank=True)
    #: What the last failed try met: "HTTP 500", "timeout", "unreachable", a refusal.
    last_error = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        # The senders' question: what is due, soonest first.
        indexes = [models.Index(fields=["done", "next_try_at"], name="notification_due")]

    def __str__(self):
        return f"{self.realm}/{self.key} {self.outcome}"

    @property
    def status(self) -> str:
        if not self.done:
            return "pending"
        return "delivered" if self.delivered_at else "given up"

    def payload(self) -> dict:
        """The webhook's JSON body (README, "Failure notifications")."""
        body = {
            "id": self.pk,
            "realm": self.realm,
            "key": self.key,
            "outcome": self.outcome,
            "fetch_outcome": self.fetch_outcome,
            "error_code": self.error_code,
            "error_message": self.error_message,
            "failing_since": self.failing_since.isoformat(),
            "attempts": self.attempts,
            "at": self.created_at.isoformat(),
        }
        if self.outcome == self.Outcome.QUOTA:
            # failing_since is when the provider's day began; attempts, the calls.
            body.update(calls=self.calls, budget=self.budget)
        return body


class QuotaUsage(models.Model):
    """
    Upstream calls of one secret in one provider day (issue 14, "The provider's
    quota guarded"), when there is no Redis to count them (tokens.quota): every
    worker and host adds to the same row with a conditional UPDATE, so a call
    past the realm's daily_budget is never granted. The flags say whether the
    day's alert and exhaustion were told (once per secret and day). Rows of
    days gone are deleted by the refresher.
    """

    secret = models.ForeignKey(Secret, on_delete=models.CASCADE, related_name="quota_usage")
    #: The provider's date (Realm.provider_day), not the server's.
    day = models.DateField()
    calls = models.PositiveIntegerField(default=0)
    alert_told = models.BooleanField(default=False)
    exhausted_told = models.BooleanField(default=False)

    class Meta:
        verbose_name = "quota usage"
        verbose_name_plural = "quota usage"
        constraints = [
            models.UniqueConstraint(fields=["secret", "day"], name="quotausage_secret_day")
        ]
        indexes = [models.Index(fields=["day"], name="quotausage_day")]

    def __str__(self):
        return f"{self.secret_id} on {self.day}: {self.calls} calls"
