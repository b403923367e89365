"""A Docker swarm of several engines on one machine, for the swarm tests: each node is a Docker-in-Docker container
made from the project's base image and Debian's docker.io, on a bridge network the test creates (the nodes have no
other address). One manager, the rest workers. Driven with the docker SDK.

What these machines allow, found by trying (issue 15): `--privileged` fails (CAP_SYS_RESOURCE is not in these VMs'
capability set). SYS_ADMIN and NET_ADMIN, no seccomp or AppArmor profile and the host's cgroup tree mounted read-write
run dockerd with working nested containers; `docker exec` in them (healthchecks) also needs SYS_PTRACE. The kernels
have no IPVS, so a swarm service's virtual IP and the ingress routing mesh do not work: the stack uses DNS round robin
(`endpoint_mode: dnsrr`) and host-mode ports.
"""

from __future__ import annotations

import io
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import docker

REPO = Path(__file__).resolve().parents[2]
NODE_IMAGE = 'sentence-swarm-node:bookworm'
NODE_DOCKERFILE = """\
FROM {base}
RUN apt-get update -qq \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io iptables ca-certificates \\
 && rm -rf /var/lib/apt/lists/*
# iptables-legacy: the nft backend cannot be used from inside these containers.
RUN update-alternatives --set iptables /usr/sbin/iptables-legacy \\
 && update-alternatives --set ip6tables /usr/sbin/ip6tables-legacy
VOLUME /var/lib/docker
# A second socket in a directory the test may mount from the host: the host's docker CLI then drives this node.
RUN mkdir -p /run/engine
ENTRYPOINT ["dockerd", "--host=unix:///var/run/docker.sock", "--host=unix:///run/engine/docker.sock", \
            "--storage-driver=overlay2"]
"""
NODE_OPTIONS = {
    'cap_add': ['SYS_ADMIN', 'NET_ADMIN', 'SYS_PTRACE'],  # SYS_PTRACE: `docker exec` (healthchecks) in a node
    'security_opt': ['seccomp=unconfined', 'apparmor=unconfined'],
    'volumes': {'/sys/fs/cgroup': {'bind': '/sys/fs/cgroup', 'mode': 'rw'}},
}


def base_image() -> str:
    """The image the project's own Dockerfiles build from (pulled, or made with debootstrap)."""
    return subprocess.run(
        [str(REPO / 'scripts' / 'base-image.sh')], capture_output=True, text=True, check=True
    ).stdout.strip()


def build_node_image(client: docker.DockerClient) -> str:
    dockerfile = NODE_DOCKERFILE.format(base=base_image())
    client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=NODE_IMAGE, rm=True, network_mode='host')
    return NODE_IMAGE


@dataclass
class Node:
    container: docker.models.containers.Container
    address: str  # on the cluster's network

    @property
    def name(self) -> str:
        return self.container.name

    def docker(self, *args: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
        """The docker CLI of this node (its engine, not the host's)."""
        return subprocess.run(
            ['docker', 'exec', '-i', self.name, 'docker', *args], capture_output=True, text=True, check=check, **kwargs
        )

    def wait_for_engine(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.docker('info', check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f'{self.name}: dockerd did not answer in {timeout:.0f} s:\n{self.container.logs()[-3000:]}'
                )
            time.sleep(1)

    def load_images(self, *images: str) -> None:
        """Copy images from the host's engine into this node's (what a registry does on a real cluster)."""
        saved = subprocess.Popen(['docker', 'save', *images], stdout=subprocess.PIPE)
        subprocess.run(['docker', 'exec', '-i', self.name, 'docker', 'load', '-q'], stdin=saved.stdout, check=True,
                       capture_output=True)  # fmt: skip
        saved.stdout.close()
        assert saved.wait() == 0, f'docker save {images} failed'


@dataclass
class Cluster:
    name: str
    manager: Node
    workers: list[Node]
    network: docker.models.networks.Network
    manager_socket: Path  # the manager's engine, for the host's docker CLI (DOCKER_HOST=unix://...) and SDK
    nodes: list[Node] = field(init=False)

    def __post_init__(self) -> None:
        self.nodes = [self.manager, *self.workers]

    @property
    def docker_host(self) -> str:
        return f'unix://{self.manager_socket}'

    def client(self) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.docker_host)


@contextmanager
def swarm_cluster(
    name: str, socket_dir: Path, workers: int = 2, images: tuple[str, ...] = (), manager_images: tuple[str, ...] = (),
    mounts: dict[str, str] | None = None, published: dict[int, int] | None = None, form_swarm: bool = True,
) -> Iterator[Cluster]:  # fmt: skip
    """Start 1 + `workers` nodes, make them a swarm, load `images` into each (and `manager_images` into the manager);
    remove everything afterwards, also when the test fails. `mounts` (host path -> node path) reach every node;
    `published` maps ports of the manager node to 127.0.0.1 ports of the host; the manager's engine answers on
    socket_dir/docker.sock. With form_swarm=False the engines join no swarm (what `make swarm-up` finds on a host
    that never ran one)."""
    client = docker.from_env()
    build_node_image(client)
    network = client.networks.create(f'{name}-net', driver='bridge', labels={'sentence-swarm-test': name})
    containers = []
    try:
        volumes = {
            **NODE_OPTIONS['volumes'],
            **{host: {'bind': node, 'mode': 'ro'} for host, node in (mounts or {}).items()},
        }
        for i in range(1 + workers):
            role = 'manager' if i == 0 else f'worker-{i}'
            ports = {f'{port}/tcp': ('127.0.0.1', host) for port, host in (published or {}).items()} if i == 0 else {}
            engine = {str(socket_dir): {'bind': '/run/engine', 'mode': 'rw'}} if i == 0 else {}
            containers.append(
                client.containers.run(
                    NODE_IMAGE,
                    name=f'{name}-{role}',
                    hostname=f'{name}-{role}',
                    detach=True,
                    network=network.name,
                    cap_add=NODE_OPTIONS['cap_add'],
                    security_opt=NODE_OPTIONS['security_opt'],
                    volumes={**volumes, **engine},
                    ports=ports,
                    labels={'sentence-swarm-test': name},
                )  # fmt: skip
            )
        nodes = []
        for container in containers:
            container.reload()
            nodes.append(Node(container, container.attrs['NetworkSettings']['Networks'][network.name]['IPAddress']))
        for node in nodes:
            node.wait_for_engine()
        manager, workers_ = nodes[0], nodes[1:]
        if form_swarm:
            manager.docker('swarm', 'init', '--advertise-addr', manager.address)
            token = manager.docker('swarm', 'join-token', '-q', 'worker').stdout.strip()
            for worker in workers_:
                worker.docker('swarm', 'join', '--token', token, f'{manager.address}:2377')
        for node in nodes:
            wanted = (*images, *manager_images) if node is manager else images
            if wanted:
                node.load_images(*wanted)
        yield Cluster(name, manager, workers_, network, socket_dir / 'docker.sock')
    finally:
        for container in containers:
            container.remove(force=True, v=True)
        network.remove()
