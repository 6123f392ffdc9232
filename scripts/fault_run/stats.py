"""Percentiles for the figures (nearest rank, as Kafka's and most load tools' reports)."""


def percentile(values, fraction):
    """The nearest-rank percentile of values (fraction in 0..1); None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-int(fraction * 1000) * len(ordered) // 1000))  # ceil, no float drift
    return ordered[min(rank, len(ordered)) - 1]
