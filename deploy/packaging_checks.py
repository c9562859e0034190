"""Cross-file checks for the packaging that no schema validator can do.

Why it exists: hadolint and kubernetes-validate check each file on its own, but the Dockerfile,
the Deployment, the Service and the gateway.yaml inside the ConfigMap must agree with each other
(ports, probe endpoints, the shutdown budget). A drift there passes every schema and still breaks
the rollout, so scripts/check-packaging runs this too.

    python deploy/packaging_checks.py extract OUT_FILE   # gateway.yaml out of the ConfigMap;
                                                         # prints its first line's number in the ConfigMap
    python deploy/packaging_checks.py consistency        # exit 1 with one line per problem
"""

import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "kubernetes"
CONFIGMAP = K8S / "configmap.yaml"
CONFIG_KEY = "gateway.yaml"


def load(path):
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def gateway_yaml_text():
    return load(CONFIGMAP)["data"][CONFIG_KEY]


def first_config_line():
    """1-based line in configmap.yaml of gateway.yaml's first line (the line after `gateway.yaml: |`)."""
    lines = CONFIGMAP.read_text(encoding="utf-8").splitlines()
    header = re.compile(r"^\s+" + re.escape(CONFIG_KEY) + r":\s*\|")
    return next(i for i, line in enumerate(lines, start=1) if header.match(line)) + 1


def seconds(value):
    """gateway.yaml durations: integer seconds or "500ms"/"30s"/"5m"/"1h"."""
    if isinstance(value, int):
        return float(value)
    m = re.fullmatch(r"(\d+)(ms|s|m|h)", str(value).strip())
    if not m:
        raise ValueError(f"not a duration: {value!r}")
    return int(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def port_of(addr):
    return int(str(addr).rsplit(":", 1)[1])


def listen_addrs(server):
    listen = server.get("listen", [])
    entries = listen if isinstance(listen, list) else [listen]
    return [e["addr"] if isinstance(e, dict) else e for e in entries]


def dockerfile_facts():
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    exposed = {int(p) for line in re.findall(r"^EXPOSE\s+(.+)$", text, re.MULTILINE) for p in line.split()}
    health = re.search(r"http://127\.0\.0\.1:(\d+)(/\S*?)\"", text)
    return exposed, health


def dockerfile_copy_sources():
    """Build-context paths of every COPY without --from (the last word is the destination)."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    sources = []
    for args in re.findall(r"^COPY\s+(.+)$", text, re.MULTILINE):
        words = args.split()
        if not any(w.startswith("--from=") for w in words):
            sources += [w for w in words[:-1] if not w.startswith("--")]
    return sources


def dockerignore_patterns():
    """.dockerignore lines as regexes (Docker's rules: `*` within a segment, `**` across, `!` re-includes)."""
    patterns = []
    for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        glob = line.lstrip("!").lstrip("/")
        rx = re.escape(glob).replace(r"\*\*/", "(?:.*/)?").replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
        patterns.append((negated, re.compile(rx.replace(r"\?", "[^/]") + "$")))
    return patterns


def ignored(path, patterns):
    """Whether `path` (or a folder above it) is left out of the build context."""
    parts = path.strip("/").split("/")
    result = False
    for negated, rx in patterns:
        if any(rx.match("/".join(parts[:k])) for k in range(1, len(parts) + 1)):
            result = not negated
    return result


def image_default_config_problems(exposed, health):
    """The image's /etc/portcullis/gateway.yaml (examples/gateway.yaml) against EXPOSE and HEALTHCHECK."""
    path = ROOT / "examples" / "gateway.yaml"
    if not path.exists():
        return [], []
    server = load(path).get("server", {})
    addrs = listen_addrs(server)
    admin = server.get("admin")
    found, warnings = [], []
    if not {port_of(a) for a in addrs} & exposed:
        found.append(f"examples/gateway.yaml: no server.listen port among EXPOSE {sorted(exposed)}")
    if health is None or admin is None or port_of(admin) != int(health.group(1)):
        found.append(f"examples/gateway.yaml: server.admin {admin} is not the HEALTHCHECK's port")
    loopback = [a for a in addrs + [admin or ""] if a.startswith(("127.", "[::1]", "localhost"))]
    if loopback:
        warnings.append(
            f"examples/gateway.yaml binds {loopback} on loopback: the image's default config "
            "is reachable only from inside the container; mount a config that binds 0.0.0.0"
        )
    return found, warnings


def problems():
    config = yaml.safe_load(gateway_yaml_text())
    server = config["server"]
    deployment = load(K8S / "deployment.yaml")
    service = load(K8S / "service.yaml")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    exposed, health = dockerfile_facts()
    found = []

    def expect(ok, message):
        if not ok:
            found.append(message)

    proxy_ports = {port_of(a) for a in listen_addrs(server)}
    admin = server.get("admin")
    expect(
        all(a.startswith(("0.0.0.0:", "[::]:")) for a in listen_addrs(server) + [admin or ""]),
        "gateway.yaml: server.listen and server.admin must bind 0.0.0.0 (or [::]) in a pod",
    )
    expect(
        ports.get("http") in proxy_ports,
        f"deployment: containerPort 'http' {ports.get('http')} is not a server.listen port {sorted(proxy_ports)}",
    )
    expect(
        admin is not None and ports.get("admin") == port_of(admin),
        f"deployment: containerPort 'admin' {ports.get('admin')} is not server.admin {admin}",
    )
    expect(
        container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"},
        "deployment: readinessProbe must GET /readyz on the admin port",
    )
    expect(
        container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"},
        "deployment: livenessProbe must GET /healthz on the admin port",
    )
    expect(
        {"/etc/portcullis/gateway.yaml"} <= set(container["args"])
        and any(
            m["mountPath"] == "/etc/portcullis" and "subPath" not in m for m in container["volumeMounts"]
        ),
        "deployment: the ConfigMap must be mounted as the /etc/portcullis directory (no subPath) and passed with -c",
    )

    grace = pod["terminationGracePeriodSeconds"]
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    shutdown = seconds(server.get("shutdown-grace", 10))
    expect(
        grace > pre_stop + shutdown,
        f"deployment: terminationGracePeriodSeconds {grace} must exceed preStop {pre_stop}s + shutdown-grace {shutdown:g}s",
    )

    service_targets = {p["targetPort"] for p in service["spec"]["ports"]}
    expect(
        service_targets <= set(ports),
        f"service: targetPort {sorted(service_targets)} not among {sorted(ports)}",
    )
    expect(
        service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"],
        "service: selector differs from the Deployment's",
    )

    expect(
        set(ports.values()) <= exposed, f"Dockerfile: EXPOSE {sorted(exposed)} lacks {sorted(ports.values())}"
    )
    expect(
        health is not None and int(health.group(1)) == ports.get("admin") and health.group(2) == "/healthz",
        "Dockerfile: HEALTHCHECK must probe /healthz on the admin port",
    )

    patterns = dockerignore_patterns()
    for source in dockerfile_copy_sources():
        expect((ROOT / source).exists(), f"Dockerfile: COPY source {source} does not exist")
        expect(
            not ignored(source, patterns), f"Dockerfile: COPY source {source} is excluded by .dockerignore"
        )
    for probe in ("target/release/portcullis", ".git/HEAD", ".venv-packaging/bin/python"):
        expect(ignored(probe, patterns), f".dockerignore: {probe} would be sent in the build context")
    default_found, warnings = image_default_config_problems(exposed, health)
    found += default_found
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    return found


def main(argv):
    if len(argv) == 3 and argv[1] == "extract":
        Path(argv[2]).write_text(gateway_yaml_text(), encoding="utf-8")
        print(first_config_line())
        return 0
    if len(argv) == 2 and argv[1] == "consistency":
        found = problems()
        for p in found:
            print(p, file=sys.stderr)
        return 1 if found else 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
