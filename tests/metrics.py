"""Reading /metrics in tests: Prometheus' text format, parsed by prometheus_client's parser."""

from prometheus_client.parser import text_string_to_metric_families


def samples(text: str) -> dict:
    """{(sample name, frozenset of label items): value} of a scrape."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[sample.name, frozenset(sample.labels.items())] = sample.value
    return found


def value(text: str, name: str, **labels) -> float:
    """One sample's value (0 when the scrape does not have it: a counter not yet counted)."""
    return samples(text).get((name, frozenset(labels.items())), 0.0)
