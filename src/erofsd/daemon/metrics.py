"""The daemon's figures in the Prometheus text format."""

from __future__ import annotations


def _escape(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**values: object) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in values.items()) + "}"


def prometheus_text(status: dict) -> str:
    lines: list[str] = []

    def gauge(name: str, help_text: str, samples: list[tuple[str, float]]) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} gauge")
        lines.extend(f"{name}{labels} {value}" for labels, value in samples)

    gauge("erofsd_mounts", "Images mounted by this daemon.", [("", len(status["mounts"]))])
    gauge("erofsd_domains", "Live shared domains.", [("", len(status["domains"]))])
    gauge("erofsd_domain_mounts", "Mounts in each domain.",
          [(_labels(domain_id=d["domain_id"]), d["mounts"]) for d in status["domains"]])
    for field, help_text in (
            ("fetched_bytes", "Bytes ever fetched from sources by each domain's cookies."),
            ("filled_locally_bytes", "Bytes each domain's cookies took from other blobs of "
             "the domain instead of fetching them."),
            ("reflinked_bytes", "Of those, bytes sharing the other blob's disk blocks.")):
        gauge(f"erofsd_domain_{field}", help_text,
              [(_labels(domain_id=d["domain_id"]), d.get(field, 0))
               for d in status["domains"]])
    for field, help_text in (
            ("refcount", "Mounts using each cookie."),
            ("size", "Size of each blob in bytes."),
            ("cached_bytes", "Bytes of each blob present in the cache."),
            ("fetched_bytes", "Bytes ever fetched from sources for each cookie."),
            ("filled_locally_bytes", "Bytes ever taken from the volume's other blobs "
             "instead of fetched, per cookie."),
            ("reflinked_bytes", "Of those, bytes sharing the other blob's disk blocks."),
            ("read_bytes", "Bytes readers asked for, per cookie."),
            ("hits", "Reads served from the cache, per cookie."),
            ("misses", "Reads that had to fetch, per cookie."),
            ("blocked_seconds", "Time readers waited for fetches, per cookie.")):
        gauge(f"erofsd_cookie_{field}", help_text,
              [(_labels(volume=c["volume"], blob=c["blob"]), c.get(field, 0))
               for c in status["cookies"]])
    daemon = status.get("daemon", {})
    gauge("erofsd_fanotify_events", "Pre-content events answered.",
          [("", daemon.get("fanotify_events", 0))])
    gauge("erofsd_fanotify_denied", "Pre-content events denied (readers got an errno).",
          [("", daemon.get("fanotify_denied", 0))])
    gauge("erofsd_resident_bytes", "Resident memory of the daemon.",
          [("", daemon.get("rss_bytes", 0))])
    return "\n".join(lines) + "\n"
