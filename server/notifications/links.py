"""Links from a notification to our REST resources, so a receiver can fetch more than it was sent."""

from __future__ import annotations

from server.api.main import API_PREFIX
from server.notifications.facts import EventFacts

__all__ = ["resource_links"]


def resource_links(facts: EventFacts, public_api_url: str | None) -> dict[str, str]:
    """``series``, ``job``, ``timeline`` and, when the event wrote reports, ``result`` and ``pdf``.

    Absolute under ``public_api_url`` (``LUNGCDS_PUBLIC_API_URL``), else paths from our API's root;
    every one needs a viewer's API key or token.
    """
    base = f"{(public_api_url or '').rstrip('/')}{API_PREFIX}"
    series = f"{base}/series/{facts.series_instance_uid}"
    links = {"series": series}
    if facts.job_id is not None:
        links["job"] = f"{base}/jobs/{facts.job_id}"
        links["timeline"] = f"{base}/jobs/{facts.job_id}/timeline"
    if facts.reports:
        links["result"] = f"{series}/result"
        links["pdf"] = f"{series}/reports/pdf"
    return links
