"""The Prometheus text (daemon/metrics.py) of a status view."""

from __future__ import annotations

from erofsd.daemon.metrics import prometheus_text

STATUS = {
    "mounts": [{"name": "d1,a"}, {"name": "d1,b"}],
    "domains": [{"domain_id": "d1", "mounts": 2}],
    "cookies": [{"volume": 'erofs,we"ird\\', "blob": "sha256:ab", "refcount": 2, "size": 10,
                 "cached_bytes": 4, "fetched_bytes": 5, "read_bytes": 3, "hits": 1,
                 "misses": 2, "blocked_seconds": 0.25}],
    "daemon": {"fanotify_events": 7, "fanotify_denied": 1, "rss_bytes": 1024},
}


def test_every_figure_is_a_gauge_with_help_and_escaped_labels():
    text = prometheus_text(STATUS)
    lines = text.splitlines()
    assert "erofsd_mounts 2" in lines and "erofsd_domains 1" in lines
    assert 'erofsd_domain_mounts{domain_id="d1"} 2' in lines
    labels = '{volume="erofs,we\\"ird\\\\",blob="sha256:ab"}'
    assert f"erofsd_cookie_refcount{labels} 2" in lines
    assert f"erofsd_cookie_blocked_seconds{labels} 0.25" in lines
    assert "erofsd_fanotify_denied 1" in lines and "erofsd_resident_bytes 1024" in lines
    for line in lines:
        if line.startswith("# TYPE"):
            assert line.endswith(" gauge")
    names = {line.split()[2] for line in lines if line.startswith("# HELP")}
    assert names == {line.split()[2] for line in lines if line.startswith("# TYPE")}
    assert text.endswith("\n")
