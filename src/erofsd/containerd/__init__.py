"""erofsd as containerd sees it: its API (api/, generated at install time), a client, pull."""
