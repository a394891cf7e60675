//! A node for the control plane, so pods really run: containerd + runc, a bridge
//! CNI network, kubelet, kube-proxy (nftables), kube-scheduler and CoreDNS.
//!
//! The node changes the host (a bridge, nftables tables, mounts, network
//! namespaces, cgroups, a few sysctls the kubelet rewrites), so it needs root and
//! one runs per machine at a time (a lock file says so). [`Host::restore`] undoes
//! every change, also when a test panics (the control plane's `stop` calls it).
//! Images come offline from `scripts/images.sh` (one static binary each) and are
//! imported into this node's own containerd; nothing is pulled.

use std::{
    fs,
    net::Ipv4Addr,
    os::unix::{fs::OpenOptionsExt, io::AsRawFd},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

/// The node's bridge, and the address on it that the host (API server, kubelet)
/// answers on: pods reach the API server there.
pub const BRIDGE: &str = "thvnode0";
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 1);
pub const POD_CIDR: &str = "10.244.0.0/24";
/// The ClusterIP CoreDNS's Service gets (inside the API server's 10.0.0.0/16).
pub const DNS_SERVICE_IP: &str = "10.0.0.10";
pub const NODE_NAME: &str = "toolhive-node";
/// The CoreDNS image tag `scripts/images.sh` builds.
pub const COREDNS_TAG: &str = "v1.14.7";
const LOCK: &str = "/run/toolhive-node.lock";
/// The sysctls as they were before the node, kept on disk until restored: a node
/// killed outright (SIGKILL) cannot restore them, and the next one must not take the
/// kubelet's values for the machine's.
const SAVED_SYSCTLS: &str = "/run/toolhive-node.sysctls";
/// Sysctls the kubelet (or the node's routing) changes, put back on the way down.
const SYSCTLS: &[&str] =
    &["net/ipv4/ip_forward", "vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops", "kernel/keys/root_maxkeys"];

/// The directory of image tarballs (docker-archive), built on first use by
/// `scripts/images.sh` (or taken from `TOOLHIVE_IMAGES_DIR`).
pub fn images_dir() -> Result<PathBuf> {
    if let Ok(dir) = std::env::var("TOOLHIVE_IMAGES_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let script = crate::repo_root().join("scripts/images.sh");
    let out =
        Command::new("bash").arg(&script).stderr(Stdio::inherit()).output().with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!("{} failed; see its output above", script.display());
    }
    Ok(PathBuf::from(String::from_utf8(out.stdout)?.trim().lines().last().unwrap_or_default()))
}

/// What the node changed on the host, to undo it.
pub struct Host {
    dir: PathBuf,
    _lock: fs::File,
    sysctls: Vec<(&'static str, String)>,
    netns_before: Vec<PathBuf>,
}

fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program).args(args).stdin(Stdio::null()).output().with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!("{program} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The network namespaces CRI pins as files (under /var/run/netns, which is /run/netns
/// on most machines: the real path, as /proc/self/mountinfo shows it).
fn netns_files() -> Vec<PathBuf> {
    let dir = fs::canonicalize("/var/run/netns").unwrap_or_else(|_| PathBuf::from("/var/run/netns"));
    fs::read_dir(dir).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default()
}

impl Host {
    /// Takes the machine's node lock, records what will change, and creates the
    /// bridge with the gateway address (the API server binds to it).
    pub fn prepare(dir: &Path) -> Result<Self> {
        if unsafe { libc::geteuid() } != 0 {
            bail!("a node needs root (containerd, network namespaces, mounts)");
        }
        for tool in ["containerd", "ctr", "runc", "ip", "nft", "umoci", "skopeo"] {
            if Command::new("sh").args(["-c", &format!("command -v {tool}")]).stdout(Stdio::null()).status()?.code() != Some(0) {
                bail!("{tool} is missing: run scripts/node-packages.sh");
            }
        }
        let lock = fs::OpenOptions::new().create(true).truncate(false).write(true).mode(0o644).open(LOCK)?;
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            bail!("another node runs on this machine ({LOCK} is held; `make dev-down` stops the development one)");
        }
        let saved = fs::read_to_string(SAVED_SYSCTLS).unwrap_or_default();
        let sysctls: Vec<(&'static str, String)> = SYSCTLS
            .iter()
            .filter_map(|k| {
                let before = saved.lines().find_map(|l| l.strip_prefix(k)?.strip_prefix('=')).map(str::to_string);
                Some((*k, before.or_else(|| Some(fs::read_to_string(format!("/proc/sys/{k}")).ok()?.trim().to_string()))?))
            })
            .collect();
        fs::write(SAVED_SYSCTLS, sysctls.iter().map(|(k, v)| format!("{k}={v}\n")).collect::<String>())?;
        let host = Host { dir: dir.to_path_buf(), _lock: lock, sysctls, netns_before: netns_files() };
        // A bridge left by a run that was killed outright is taken over, not an error.
        let _ = run("ip", &["link", "del", BRIDGE]);
        run("ip", &["link", "add", "name", BRIDGE, "type", "bridge"])?;
        run("ip", &["addr", "add", &format!("{GATEWAY}/24"), "dev", BRIDGE])?;
        run("ip", &["link", "set", BRIDGE, "up"])?;
        fs::write("/proc/sys/net/ipv4/ip_forward", "1")?;
        Ok(host)
    }

    /// The containerd socket of this node.
    pub fn containerd_socket(&self) -> PathBuf {
        self.dir.join("containerd/containerd.sock")
    }

    fn ctr(&self, args: &[&str]) -> Result<String> {
        let socket = self.containerd_socket();
        let mut all = vec!["--address", socket.to_str().unwrap_or_default(), "--namespace", "k8s.io"];
        all.extend_from_slice(args);
        run("ctr", &all)
    }

    /// Kills every container of this node (the kubelet is already gone): shims and
    /// their containers outlive containerd otherwise.
    pub fn stop_containers(&self) {
        let tasks = || -> Vec<String> {
            self.ctr(&["tasks", "ls", "--quiet"])
                .map(|out| out.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect())
                .unwrap_or_default()
        };
        for id in tasks() {
            let _ = self.ctr(&["tasks", "kill", "--signal", "SIGKILL", &id]);
        }
        // A killed task is deleted once it has exited; until then deleting it fails.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = tasks();
            if left.is_empty() || Instant::now() > deadline {
                break;
            }
            for id in left {
                let _ = self.ctr(&["tasks", "delete", "--force", &id]);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Undoes what the node did to the host: mounts under its directory and the
    /// pods' network namespaces, kube-proxy's nftables tables, the bridge, the
    /// kubelet's cgroups, the sysctls. Best effort: every step runs.
    pub fn restore(&self) {
        let dir = self.dir.display().to_string();
        let new_netns: Vec<PathBuf> = netns_files().into_iter().filter(|p| !self.netns_before.contains(p)).collect();
        let mut mounts: Vec<String> = fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(unescape_mount_path))
            .filter(|m| m.starts_with(&dir) || new_netns.iter().any(|n| Path::new(m) == n))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for mount in &mounts {
            if let Ok(path) = std::ffi::CString::new(mount.as_str()) {
                unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
            }
        }
        for ns in &new_netns {
            let _ = fs::remove_file(ns);
        }
        for family in ["ip", "ip6"] {
            let _ = run("nft", &["delete", "table", family, "kube-proxy"]);
        }
        let _ = run("ip", &["link", "del", BRIDGE]);
        remove_cgroups();
        for (key, value) in &self.sysctls {
            let _ = fs::write(format!("/proc/sys/{key}"), value);
        }
        let _ = fs::remove_file(SAVED_SYSCTLS);
    }
}

/// `/proc/self/mountinfo` escapes space, tab, newline and backslash as octal.
fn unescape_mount_path(raw: &str) -> String {
    raw.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")
}

/// The kubelet's pod cgroups (`kubepods` under each v1 hierarchy, or under the v2
/// root), deepest first; they are empty once every container is gone.
fn remove_cgroups() {
    fn remove_tree(dir: &Path) {
        if let Ok(entries) = fs::read_dir(dir) {
            for entry in entries.flatten() {
                if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    remove_tree(&entry.path());
                }
            }
        }
        let _ = fs::remove_dir(dir);
    }
    let root = Path::new("/sys/fs/cgroup");
    remove_tree(&root.join("kubepods"));
    if let Ok(hierarchies) = fs::read_dir(root) {
        for h in hierarchies.flatten() {
            remove_tree(&h.path().join("kubepods"));
        }
    }
}

/// The files the node's components read, written into `dir`.
pub struct Configs {
    pub containerd: PathBuf,
    pub kubelet: PathBuf,
    pub kube_proxy: PathBuf,
}

pub fn write_configs(dir: &Path, kubeconfig: &Path, ca_file: &Path) -> Result<Configs> {
    let containerd_dir = dir.join("containerd");
    let cni_conf = dir.join("cni/net.d");
    fs::create_dir_all(&cni_conf)?;
    fs::create_dir_all(&containerd_dir)?;
    let configs = Configs {
        containerd: containerd_dir.join("config.toml"),
        kubelet: dir.join("kubelet-config.yaml"),
        kube_proxy: dir.join("kube-proxy-config.yaml"),
    };
    // restrict_oom_score_adj: the machines here lack CAP_SYS_RESOURCE, and runc
    // fails to start a sandbox that asks for a negative OOM score adjustment.
    fs::write(
        &configs.containerd,
        format!(
            r#"version = 2
root = "{root}/root"
state = "{root}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.internal.v1.opt"]
[grpc]
  address = "{root}/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "localhost/toolhive-node/pause:v1"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni}"
"#,
            root = containerd_dir.display(),
            cni = cni_conf.display(),
        ),
    )?;
    fs::write(
        cni_conf.join("10-toolhive-node.conflist"),
        serde_json::to_string_pretty(&serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "toolhive-node",
            "plugins": [{
                "type": "bridge", "bridge": BRIDGE, "isGateway": true, "ipMasq": false, "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_CIDR, "gateway": GATEWAY.to_string()}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": dir.join("cni/ipam").display().to_string(),
                }
            }]
        }))?,
    )?;
    let port = || crate::free_port();
    // No eviction at all ("0%" switches a signal off): the test machines' disks
    // are sometimes nearly full, and a kubelet that evicts the operator and CoreDNS
    // and taints its node makes tests fail for reasons that are not theirs. Each
    // signal is named, so none falls back to its default.
    fs::write(
        &configs.kubelet,
        format!(
            "apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: {GATEWAY}
port: {port}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: {healthz}
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: false}}
  x509: {{clientCAFile: {ca}}}
authorization: {{mode: AlwaysAllow}}
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://{socket}
clusterDNS: [{DNS_SERVICE_IP}]
clusterDomain: cluster.local
makeIPTablesUtilChains: false
protectKernelDefaults: false
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {{memory.available: \"0%\", nodefs.available: \"0%\", nodefs.inodesFree: \"0%\", imagefs.available: \"0%\", imagefs.inodesFree: \"0%\", pid.available: \"0%\"}}
",
            port = port()?,
            healthz = port()?,
            ca = ca_file.display(),
            socket = containerd_dir.join("containerd.sock").display(),
        ),
    )?;
    // masqueradeAll: Service traffic between pods on the one bridge would otherwise
    // answer past the DNAT (no br_netfilter here).
    fs::write(
        &configs.kube_proxy,
        format!(
            "apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: nftables
clientConnection: {{kubeconfig: {kubeconfig}}}
hostnameOverride: {NODE_NAME}
clusterCIDR: {POD_CIDR}
bindAddress: 127.0.0.1
healthzBindAddress: 127.0.0.1:{healthz}
metricsBindAddress: 127.0.0.1:{metrics}
nftables: {{masqueradeAll: true}}
conntrack: {{maxPerCore: 0, min: 0}}
",
            kubeconfig = kubeconfig.display(),
            healthz = port()?,
            metrics = port()?,
        ),
    )?;
    Ok(configs)
}

/// Imports every image tarball into the node's containerd.
pub fn import_images(host: &Host, images: &Path) -> Result<()> {
    let mut tars: Vec<PathBuf> =
        fs::read_dir(images)?.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "tar")).collect();
    tars.sort();
    if tars.is_empty() {
        bail!("no images in {}", images.display());
    }
    tars.iter().try_for_each(|tar| import_image(host, tar))
}

pub fn import_image(host: &Host, tar: &Path) -> Result<()> {
    host.ctr(&["images", "import", "--snapshotter", "overlayfs", tar.to_str().unwrap_or_default()])
        .with_context(|| format!("importing {}", tar.display()))?;
    Ok(())
}

/// Prometheus scrapes what [`scrape_targets`] lists in `targets` (Debian's
/// Prometheus has no Kubernetes service discovery): the chart's metrics Service, by
/// its ClusterIP, which kube-proxy routes from the host.
pub fn prometheus_config(targets: &Path) -> String {
    format!(
        "global: {{scrape_interval: 2s, evaluation_interval: 2s}}
scrape_configs:
- job_name: toolhive-operator
  file_sd_configs:
  - files: [{targets}]
    refresh_interval: 2s
",
        targets = targets.display()
    )
}

/// The Prometheus file-discovery document for one Service address (`ip:port`).
pub fn scrape_targets(address: &str, service: &str) -> String {
    serde_json::json!([{"targets": [address], "labels": {"service": service}}]).to_string()
}

/// CoreDNS as a Deployment behind the Service at [`DNS_SERVICE_IP`], answering for
/// `cluster.local` from the API (Services, EndpointSlices, pods).
pub fn coredns_objects(image: &str) -> Vec<serde_json::Value> {
    let labels = serde_json::json!({"k8s-app": "kube-dns"});
    vec![
        serde_json::json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "coredns", "namespace": "kube-system"}}),
        serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "toolhive-node:coredns"},
            "rules": [
                {"apiGroups": [""], "resources": ["services", "pods", "namespaces"], "verbs": ["list", "watch"]},
                {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]}]}),
        serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "toolhive-node:coredns"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "toolhive-node:coredns"},
            "subjects": [{"kind": "ServiceAccount", "name": "coredns", "namespace": "kube-system"}]}),
        serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "coredns", "namespace": "kube-system"},
            "data": {"Corefile": ".:5353 {\n    errors\n    health :8080\n    ready :8181\n    kubernetes cluster.local in-addr.arpa ip6.arpa {\n        pods insecure\n        fallthrough in-addr.arpa ip6.arpa\n    }\n    cache 30\n    loadbalance\n}\n"}}),
        serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "coredns", "namespace": "kube-system", "labels": labels},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {"metadata": {"labels": labels}, "spec": {
                "serviceAccountName": "coredns",
                "dnsPolicy": "Default",
                "volumes": [{"name": "config", "configMap": {"name": "coredns"}}],
                "containers": [{"name": "coredns", "image": image, "imagePullPolicy": "Never",
                    "args": ["-conf", "/etc/coredns/Corefile"],
                    "volumeMounts": [{"name": "config", "mountPath": "/etc/coredns", "readOnly": true}],
                    "ports": [{"name": "dns", "containerPort": 5353, "protocol": "UDP"}, {"name": "dns-tcp", "containerPort": 5353, "protocol": "TCP"}],
                    "readinessProbe": {"httpGet": {"path": "/ready", "port": 8181}, "periodSeconds": 2},
                    "securityContext": {"allowPrivilegeEscalation": false, "runAsNonRoot": true, "capabilities": {"drop": ["ALL"]}}}]}}}}),
        serde_json::json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": labels},
            "spec": {"clusterIP": DNS_SERVICE_IP, "selector": labels, "ports": [
                {"name": "dns", "port": 53, "targetPort": 5353, "protocol": "UDP"},
                {"name": "dns-tcp", "port": 53, "targetPort": 5353, "protocol": "TCP"}]}}),
    ]
}
