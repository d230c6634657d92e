"""Every tool the classifier knows, by name: its rules, or the risk of the whole tool."""

from __future__ import annotations

from .args import Tool, _simple_verb, _table, _uniform
from .cloud import _aws, _curl, _gcloud, _gh, _wget
from .clusters import _argocd, _consul, _etcdctl, _helm, _kubectl, _patronictl, _terraform, _vault
from .datastores import _ceph, _kafka, _mysql, _pg_ctl, _pg_dump, _pg_restore, _psql, _redis
from .hosts import (
    _CONTAINER_VALUES,
    _CONTAINERS,
    _awk,
    _crontab,
    _find,
    _git,
    _ip,
    _iptables,
    _journalctl,
    _nc,
    _openssl,
    _ps_style,
    _rsync,
    _sed,
    _service,
    _signal_tool,
    _systemctl,
    _tar,
    _tee,
    _yq,
)
from .risks import _words


def _kafka_tool(name: str) -> Tool:
    return lambda args, stdin, depth: _kafka(name, args)


TOOLS: dict[str, Tool] = {
    "kubectl": _kubectl,
    "oc": _kubectl,
    "k": _kubectl,
    "helm": _helm,
    "patronictl": _patronictl,
    "etcdctl": _etcdctl,
    "vault": _vault,
    "terraform": _terraform,
    "tofu": _terraform,
    "redis-cli": _redis,
    "aws": _aws,
    "gcloud": _gcloud,
    "systemctl": _systemctl,
    "service": _service,
    "journalctl": _journalctl,
    "kill": _signal_tool("kill"),
    "pkill": _signal_tool("pkill"),
    "killall": _signal_tool("killall"),
    "git": _git,
    "curl": _curl,
    "wget": _wget,
    "find": _find,
    "sed": _sed,
    "awk": _awk,
    "gawk": _awk,
    "tee": _tee,
    "tar": _tar,
    "rsync": _rsync,
    "crontab": _crontab,
    "iptables": _iptables,
    "ip6tables": _iptables,
    "ip": _ip,
    "openssl": _openssl,
    "nc": _nc,
    "ncat": _nc,
    "docker": _ps_style("docker", _CONTAINERS, _CONTAINER_VALUES),
    "podman": _ps_style("podman", _CONTAINERS, _CONTAINER_VALUES),
    "crictl": _ps_style("crictl", _CONTAINERS, _CONTAINER_VALUES),
    "psql": _psql,
    "mysql": _mysql,
    "pg_ctl": _pg_ctl,
    "pg_ctlcluster": _uniform("unknown", "pg_ctlcluster.unknown-verb"),
    "pg_dump": _pg_dump,
    "pg_dumpall": _pg_dump,
    "pg_restore": _pg_restore,
    "ceph": _ceph,
    "yq": _yq,
    "argocd": _argocd,
    "istioctl": _simple_verb(
        "istioctl",
        _table(
            read="analyze proxy-status proxy-config version verify-install x",
            change="install upgrade kube-inject",
            destructive="uninstall",
        ),
    ),
    "velero": _simple_verb(
        "velero",
        _table(read="get describe version", change="backup restore schedule create", destructive="delete"),
    ),
    "cilium": _simple_verb(
        "cilium",
        _table(
            read="status connectivity version hubble config",
            change="install upgrade",
            destructive="uninstall",
        ),
    ),
    "etcd": _uniform("unknown", "etcd.server"),
    "consul": _consul,
    "gh": _gh,
    "pip": _simple_verb(
        "pip",
        _table(
            read="list show freeze check help config",
            change="install download wheel",
            destructive="uninstall",
        ),
    ),
    "pip3": _simple_verb(
        "pip3",
        _table(
            read="list show freeze check help config",
            change="install download wheel",
            destructive="uninstall",
        ),
    ),
    "perf": _simple_verb(
        "perf", _table(read="report top stat list annotate script diff", change="record trace probe")
    ),
    "logcli": _simple_verb(
        "logcli",
        _table(read="query instant-query labels series stats volume volume_range", destructive="delete"),
    ),
    **{
        name: _kafka_tool(name)
        for base in (
            "kafka-topics",
            "kafka-consumer-groups",
            "kafka-configs",
            "kafka-acls",
            "kafka-reassign-partitions",
            "kafka-log-dirs",
            "kafka-leader-election",
            "kafka-preferred-replica-election",
            "kafka-delete-records",
            "kafka-console-consumer",
            "kafka-console-producer",
            "kafka-broker-api-versions",
            "kafka-get-offsets",
            "kafka-verifiable-producer",
            "kafka-server-stop",
            "kafka-server-start",
        )
        for name in (base, f"{base}.sh")
    },
}

READ_ONLY = _words(
    """: cat less more head tail grep egrep fgrep zgrep rg ag jq wc sort uniq cut tr column ls ll ps pgrep df
    du free top htop uptime date echo printf dig nslookup host ping ping6 traceroute tracepath mtr ss
    netstat whoami hostname id stat which whereis type test [ true false file diff cmp md5sum sha256sum
    sha1sum base64 hexdump xxd od strings lsof lsblk blkid findmnt vmstat iostat mpstat sar pidstat
    dmesg lscpu lsmod lspci lsusb nproc uname arch getent groups last w who iotop nload iftop
    sleep cd pwd export set unset alias read wait exit return shift local declare pushd popd history
    basename dirname realpath readlink seq printenv locale timedatectl hostnamectl loginctl
    resolvectl pg_isready pg_controldata pg_lsclusters pg_config promtool amtool ethtool arp
    route nstat numastat slabtop pmap smem zcat zless bzcat xzcat nl fold fmt paste join comm tac rev
    expand unexpand factor expr bc getconf umask jps jstack jstat ldd nm objdump readelf lvs pvs vgs
    lvdisplay pvdisplay vgdisplay xfs_info dumpe2fs tree"""
)
CHANGE = _words(
    """mv cp chmod chown chgrp mkdir touch ln install scp sftp gzip gunzip bzip2 xz unxz zip unzip
    useradd usermod groupadd passwd chpasswd apt apt-get yum dnf rpm dpkg npm update-ca-certificates
    restorecon setenforce chcon logrotate certbot ssh-keygen ssh-copy-id htpasswd exportfs swapon
    modprobe sysctl-w mount umount"""
)
DESTRUCTIVE = _words(
    """rm rmdir dd shred wipefs mkfs mkfs.ext4 mkfs.xfs fdisk parted sfdisk truncate shutdown reboot halt
    poweroff swapoff userdel groupdel lvremove vgremove pvremove dropdb dropuser pg_resetwal pg_rewind
    fstrim blkdiscard"""
)
