"""What one recipient's outcome adds to a send's counters (storage/progress.py),
by state and, for failed and skipped, by reason (`skipped_opted_out`)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from proactive.errors import UNREACHABLE, Reason

# Reasons a recipient was passed over without a Connector call.
SKIP_REASONS = UNREACHABLE | {Reason.CANCELLED, Reason.OPTED_OUT, Reason.DISABLED_ACCOUNT}
# Recipients one of whose attempts had an unknown outcome (sent again: maybe
# two copies; or, onUnknown skip, recorded unknown): counted beside the above.
AMBIGUOUS = "ambiguous"


def result_counts(reason: str, *, ambiguous: bool = False) -> Counter[str]:
    """What one recipient's outcome adds to the counters (`ambiguous`: one of
    its attempts had an unknown outcome)."""
    extra = Counter({AMBIGUOUS: 1}) if ambiguous else Counter()
    if reason == "outcome-unknown":
        return Counter({"unknown": 1}) + extra
    if reason in ("sent", "installed", "already-installed"):
        return Counter({reason.replace("-", "_"): 1}) + extra
    kind = "skipped" if reason in SKIP_REASONS else "failed"
    # Table property names allow letters, digits and underscores.
    return Counter({kind: 1, f"{kind}_{reason.replace('-', '_')}": 1}) + extra


def reason_count(state: Any, reason: Any) -> Counter[str]:
    """A failed or skipped delivery row's reason, counted as result_counts
    names it (`skipped_opted_out`): a one-recipient send's counts say why too."""
    if state not in ("failed", "skipped") or not reason:
        return Counter()
    return Counter({f"{state}_{str(reason).replace('-', '_')}": 1})
