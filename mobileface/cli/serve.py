"""``mobileface serve cameras.toml`` and ``mobileface status``: the site service on Ray."""
from __future__ import annotations

import json
import logging
import os
import signal
import time

log = logging.getLogger("mobileface")


def add_parsers(sub) -> None:
    serve = sub.add_parser("serve", help="run the cameras of a site (cameras.toml) on Ray, "
                                         "with events over MQTT")
    serve.add_argument("config", help="the site's cameras.toml")
    serve.add_argument("--address", default=None,
                       help="join the Ray cluster at this address (ray start's, e.g. "
                            "10.0.0.5:6379); default: the config's address, else a local "
                            "Ray instance on this machine")
    serve.add_argument("--check", action="store_true",
                       help="check the config and exit (nothing is started)")
    status = sub.add_parser("status", help="the cameras of a running site: fps, drops, queue, "
                                           "tracks, last error, node")
    status.add_argument("--address", default="auto",
                        help="the Ray cluster of the site (default: auto, the one on this "
                             "machine)")
    status.add_argument("--json", action="store_true", help="print JSON")


def cmd_serve(args) -> int:
    from mobileface.pipeline.runner import on_signals
    from mobileface.service import config as site_config
    from mobileface.service.site import Site, connect

    site = site_config.load(args.config)
    if args.check:
        print(f"{site.path}: {len(site.cameras)} camera(s): "
              f"{', '.join(c.name for c in site.cameras)}")
        return 0
    site.output.mkdir(parents=True, exist_ok=True)
    connect(args.address or site.address)
    import ray

    publisher = _publisher(site)
    signalled = []
    try:
        running = Site(site, publish_stats=publisher.publish_stats if publisher else None)

        def stop(signum: int) -> None:
            if not signalled:
                log.warning("%s: stopping every camera (their outputs are finalised)",
                            signal.Signals(signum).name)
            signalled.append(signum)
            running.stop()

        with on_signals(stop):
            code = running.wait()
        for entry in running.status():
            print(json.dumps(entry), flush=True)
    finally:
        if publisher is not None:
            publisher.close(timeout=5)
        ray.shutdown()
    if signalled:
        return 128 + signalled[0]
    return code


def _publisher(site):
    """The site's MQTT client (status and availability), or None without a broker."""
    if not site.mqtt:
        return None
    from mobileface.outputs.mqtt import MqttEvents

    return MqttEvents(site.mqtt, prefix=site.prefix,
                      client_id=f"mobileface-site-{os.getpid()}-{int(time.time())}")


def cmd_status(args) -> int:
    import ray

    from mobileface.errors import MobileFaceError
    from mobileface.service.site import NAMESPACE, _line

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    try:
        ray.init(address=args.address, namespace=NAMESPACE, logging_level=logging.ERROR,
                 log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise MobileFaceError(f"no running site found at Ray address {args.address}: "
                              f"{' '.join(str(exc).split())[:200]}") from None
    try:
        names = sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                       if a.get("namespace") == NAMESPACE and a["name"].startswith("camera:"))
        entries = []
        for name in names:
            try:
                actor = ray.get_actor(name, namespace=NAMESPACE)
                entries.append(ray.get(actor.status.remote(), timeout=10))
            except Exception as exc:
                entries.append({"camera": name.split(":", 1)[1], "state": "unreachable",
                                "error": " ".join(str(exc).split())[:200]})
    finally:
        ray.shutdown()
    if args.json:
        print(json.dumps(entries, indent=2))
    elif not entries:
        print("no cameras running")
    for entry in entries if not args.json else []:
        print(f"{entry['camera']:<16} {_line(entry)}")
    return 0
