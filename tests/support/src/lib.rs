//! A real Kubernetes control plane on loopback: etcd, kube-apiserver (RBAC on)
//! and, optionally, kube-controller-manager (garbage collection, namespace
//! deletion, ReplicaSets, default ServiceAccounts). Without a node pods stay
//! Pending; with [`Options::node`] a kubelet and containerd run them (see `node`).
//!
//! Binaries come from `scripts/tools.sh`, which builds them from pinned Go
//! modules into a cache. Children run in their own process group and receive
//! SIGKILL if the process that started them dies, so a panicking or killed test
//! run never leaves them behind.

pub mod mcp;
pub mod node;
pub mod pki;

use std::{
    fs,
    net::{IpAddr, Ipv4Addr, TcpListener},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Mutex, OnceLock},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, Client, Config,
    api::PostParams,
    config::{KubeConfigOptions, Kubeconfig},
};

pub use pki::{Authority, PemPair, tls_client_config, tls_client_config_as};

/// The repository root (this crate lives in `tests/support`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repo root")
}

/// ToolHive's own operator (thv-operator), built on first use by
/// `scripts/reference.sh`: its binary and the directory of its CRDs.
pub fn reference_build() -> (PathBuf, PathBuf) {
    let script = repo_root().join("scripts/reference.sh");
    let out = Command::new(&script).stderr(Stdio::inherit()).output().unwrap();
    assert!(out.status.success(), "{} failed", script.display());
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines().map(PathBuf::from);
    (lines.next().unwrap(), lines.next().unwrap())
}

/// Directory holding etcd, kube-apiserver, kube-controller-manager, kubectl and helm,
/// built on first use by `scripts/tools.sh` (or taken from `TOOLHIVE_TOOLS_BIN`).
pub fn tools_bin() -> Result<PathBuf> {
    if let Ok(dir) = std::env::var("TOOLHIVE_TOOLS_BIN") {
        return Ok(PathBuf::from(dir));
    }
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    if let Some(dir) = BIN.get() {
        return Ok(dir.clone());
    }
    let script = repo_root().join("scripts/tools.sh");
    let out =
        Command::new("bash").arg(&script).stderr(Stdio::inherit()).output().with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!("{} failed; see its output above", script.display());
    }
    let dir = PathBuf::from(String::from_utf8(out.stdout)?.trim().lines().last().unwrap_or_default());
    Ok(BIN.get_or_init(|| dir).clone())
}

#[derive(Clone, Debug)]
pub struct Options {
    /// Also run kube-controller-manager.
    pub controller_manager: bool,
    /// Where to keep state; a fresh temp dir when None.
    pub dir: Option<PathBuf>,
    /// Also run a node (needs root; one per machine): kube-scheduler, containerd,
    /// kubelet, kube-proxy and CoreDNS, with the API server on the node's bridge.
    pub node: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self { controller_manager: true, dir: None, node: false }
    }
}

pub struct ControlPlane {
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
    pub server: String,
    /// CA that signed the API server's serving cert and the admin client cert.
    pub ca_pem: String,
    /// CA of the client certificate the API server presents to any webhook that asks
    /// for one (its AdmissionConfiguration): what `--webhook-client-ca` trusts.
    pub webhook_client_ca_pem: String,
    owns_dir: bool,
    children: Mutex<Vec<(String, Child)>>,
    /// How each component was started (program, arguments), to start it again.
    commands: Mutex<Vec<(String, std::ffi::OsString, Vec<std::ffi::OsString>)>>,
    /// What a node changed on the host, undone by `stop`.
    host: Option<node::Host>,
    /// With a node: Prometheus's port on 127.0.0.1 (see [`node::prometheus_config`]).
    pub prometheus_port: Option<u16>,
}

/// The API server's AdmissionConfiguration: both webhook plugins present `client`
/// to every webhook (user `*`) that asks for a client certificate.
fn webhook_admission_config(pki_dir: &Path, client: &PemPair) -> Result<PathBuf> {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let kubeconfig = pki_dir.join("webhook-client.kubeconfig");
    write(
        &kubeconfig,
        &format!(
            "apiVersion: v1\nkind: Config\nusers:\n- name: '*'\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
            b64(&client.cert_pem),
            b64(&client.key_pem)
        ),
    )?;
    let plugin = |name: &str| {
        format!(
            "- name: {name}\n  configuration:\n    apiVersion: apiserver.config.k8s.io/v1\n    kind: WebhookAdmissionConfiguration\n    kubeConfigFile: {}\n",
            kubeconfig.display()
        )
    };
    let config = pki_dir.join("admission.yaml");
    write(
        &config,
        &format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: AdmissionConfiguration\nplugins:\n{}{}",
            plugin("ValidatingAdmissionWebhook"),
            plugin("MutatingAdmissionWebhook")
        ),
    )?;
    Ok(config)
}

/// Makes the child started by `cmd` receive SIGKILL when the thread that spawns it
/// ends, so a panicking or killed test never leaves it behind (which is why
/// `shared()` spawns from a thread that never ends).
pub fn die_with_spawning_thread(cmd: &mut Command) {
    // SAFETY: prctl is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> Result<u16> {
    // Below the kernel's ephemeral range (32768 and up by default): a port handed out
    // here is never taken meanwhile by some process's outgoing connection, and each
    // is handed out once per process (an offset by pid keeps processes apart).
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(u32::MAX, (std::process::id() * 97) % SPAN, Ordering::SeqCst, Ordering::SeqCst);
    for _ in 0..SPAN {
        let port = (FIRST + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN) as u16;
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return Ok(port);
        }
    }
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port())
}

fn write(path: &Path, contents: &str) -> Result<()> {
    fs::write(path, contents).with_context(|| format!("writing {}", path.display()))
}

impl ControlPlane {
    /// Starts etcd and kube-apiserver (and kube-controller-manager) and waits until
    /// `/readyz` answers ok.
    pub fn start(opts: Options) -> Result<Self> {
        let bin = tools_bin()?;
        let (dir, owns_dir) = match opts.dir {
            Some(d) => (d, false),
            None => {
                let base = std::env::temp_dir().join("toolhive-controlplane");
                fs::create_dir_all(&base)?;
                let d = base.join(format!("cp-{}-{}", std::process::id(), free_port()?));
                (d, true)
            }
        };
        fs::create_dir_all(&dir)?;
        let pki_dir = dir.join("pki");
        fs::create_dir_all(&pki_dir)?;

        // With a node, the API server answers on the node's bridge so pods reach it.
        let host = if opts.node { Some(node::Host::prepare(&dir)?) } else { None };
        let address = if opts.node { node::GATEWAY } else { Ipv4Addr::LOCALHOST };
        let ca = Authority::new("toolhive-local-ca")?;
        let serving = ca.serving(
            // The service account issuer's host too, so pods can discover its keys.
            &["kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"],
            &[IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), IpAddr::V4(address)],
        )?;
        let admin = ca.client("toolhive-admin", &["system:masters"])?;
        let ca_file = pki_dir.join("ca.crt");
        write(&ca_file, &ca.cert_pem())?;
        write(&pki_dir.join("apiserver.crt"), &serving.cert_pem)?;
        write(&pki_dir.join("apiserver.key"), &serving.key_pem)?;
        let sa_key = pki_dir.join("sa.key");
        let sa_pub = pki_dir.join("sa.pub");
        let (sa_private, sa_public) = pki::signing_key_pems()?;
        write(&sa_key, &sa_private)?;
        write(&sa_pub, &sa_public)?;

        let mut cp = ControlPlane {
            kubeconfig: dir.join("kubeconfig"),
            server: String::new(),
            ca_pem: ca.cert_pem(),
            webhook_client_ca_pem: String::new(),
            dir: dir.clone(),
            owns_dir,
            children: Mutex::new(Vec::new()),
            commands: Mutex::new(Vec::new()),
            host,
            prometheus_port: None,
        };

        // etcd
        let etcd_client = free_port()?;
        let etcd_peer = free_port()?;
        let etcd_url = format!("http://127.0.0.1:{etcd_client}");
        let peer_url = format!("http://127.0.0.1:{etcd_peer}");
        cp.spawn(
            "etcd",
            Command::new(bin.join("etcd")).args([
                "--name=default",
                &format!("--data-dir={}", dir.join("etcd").display()),
                &format!("--listen-client-urls={etcd_url}"),
                &format!("--advertise-client-urls={etcd_url}"),
                &format!("--listen-peer-urls={peer_url}"),
                &format!("--initial-advertise-peer-urls={peer_url}"),
                &format!("--initial-cluster=default={peer_url}"),
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ]),
        )?;
        cp.wait_for("etcd", Duration::from_secs(30), || {
            http_get_plain(etcd_client, "/health").map(|b| b.contains("true")).unwrap_or(false)
        })?;

        // kube-apiserver
        let api_port = free_port()?;
        cp.server = format!("https://{address}:{api_port}");
        let pki_path = |f: &str| pki_dir.join(f).display().to_string();
        write(&pki_dir.join("admin.crt"), &admin.cert_pem)?;
        write(&pki_dir.join("admin.key"), &admin.key_pem)?;
        // The client certificate the API server shows webhooks that ask for one: a CA
        // of its own, so trusting it admits the API server and nobody else.
        let webhook_clients = Authority::new("apiserver-webhook-client-ca")?;
        let webhook_client = webhook_clients.client("kube-apiserver-webhook-client", &[])?;
        cp.webhook_client_ca_pem = webhook_clients.cert_pem();
        let admission_config = webhook_admission_config(&pki_dir, &webhook_client)?;
        let node_flags: Vec<String> = if opts.node {
            vec![
                // The `kubernetes` Service's endpoint is the bridge address, for pods.
                "--endpoint-reconciler-type=lease".into(),
                format!("--kubelet-client-certificate={}", pki_path("admin.crt")),
                format!("--kubelet-client-key={}", pki_path("admin.key")),
                "--kubelet-preferred-address-types=InternalIP,Hostname".into(),
            ]
        } else {
            vec!["--endpoint-reconciler-type=none".into()]
        };
        cp.spawn(
            "kube-apiserver",
            Command::new(bin.join("kube-apiserver")).args(node_flags).args([
                format!("--etcd-servers={etcd_url}"),
                format!("--bind-address={address}"),
                format!("--advertise-address={address}"),
                format!("--secure-port={api_port}"),
                format!("--cert-dir={}", pki_dir.display()),
                format!("--tls-cert-file={}", pki_path("apiserver.crt")),
                format!("--tls-private-key-file={}", pki_path("apiserver.key")),
                format!("--client-ca-file={}", ca_file.display()),
                format!("--admission-control-config-file={}", admission_config.display()),
                "--authorization-mode=RBAC".into(),
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
                format!("--service-account-key-file={}", sa_pub.display()),
                format!("--service-account-signing-key-file={}", sa_key.display()),
                "--service-cluster-ip-range=10.0.0.0/16".into(),
                "--allow-privileged=true".into(),
                "--storage-backend=etcd3".into(),
                // Without a controller manager nothing creates default ServiceAccounts.
                if opts.controller_manager {
                    "--enable-admission-plugins=NamespaceLifecycle".into()
                } else {
                    "--disable-admission-plugins=ServiceAccount".into()
                },
                "-v=0".into(),
            ]),
        )?;

        cp.write_kubeconfig(&admin)?;
        let readyz = |cp: &ControlPlane| https_readyz(cp).unwrap_or(false);
        cp.wait_for("kube-apiserver", Duration::from_secs(120), || readyz(&cp))?;

        if opts.controller_manager {
            // A node needs more: StatefulSets (the proxy runner makes one), Endpoint(Slice)s
            // for Services, node lifecycle (lifts the not-ready taint), pod GC.
            let controllers = if opts.node {
                "garbagecollector,namespace,serviceaccount,serviceaccount-token,deployment,replicaset,root-ca-cert-publisher,\
                 statefulset,endpointslice,nodelifecycle,podgc"
            } else {
                "garbagecollector,namespace,serviceaccount,serviceaccount-token,deployment,replicaset,root-ca-cert-publisher"
            };
            cp.spawn(
                "kube-controller-manager",
                Command::new(bin.join("kube-controller-manager")).args([
                    format!("--kubeconfig={}", cp.kubeconfig.display()),
                    "--leader-elect=false".into(),
                    "--bind-address=127.0.0.1".into(),
                    "--secure-port=0".into(),
                    format!("--root-ca-file={}", ca_file.display()),
                    format!("--service-account-private-key-file={}", sa_key.display()),
                    "--use-service-account-credentials=false".into(),
                    format!("--controllers={controllers}"),
                    "-v=0".into(),
                ]),
            )?;
            // A bad flag makes it exit at once; fail loudly rather than run without GC.
            let started = Instant::now();
            cp.wait_for("kube-controller-manager", Duration::from_secs(5), || started.elapsed() > Duration::from_secs(2))?;
        }
        if opts.node {
            cp.start_node(&bin, &ca_file)?;
        }
        Ok(cp)
    }

    /// The file Prometheus discovers its targets from (see [`node::scrape_targets`]).
    pub fn prometheus_targets(&self) -> PathBuf {
        self.dir.join("prometheus-targets.json")
    }

    /// Imports an image (docker-archive tar) into the node's containerd.
    pub fn import_image(&self, tar: &Path) -> Result<()> {
        node::import_image(self.host.as_ref().context("this control plane has no node")?, tar)
    }

    /// kube-scheduler, containerd (images imported), kube-proxy, kubelet; then waits
    /// for the node to be Ready and CoreDNS to answer.
    fn start_node(&mut self, bin: &Path, ca_file: &Path) -> Result<()> {
        let images = node::images_dir()?;
        let configs = node::write_configs(&self.dir, &self.kubeconfig, ca_file)?;
        let kubeconfig = format!("--kubeconfig={}", self.kubeconfig.display());
        self.spawn(
            "kube-scheduler",
            Command::new(bin.join("kube-scheduler")).args([
                kubeconfig.clone(),
                "--leader-elect=false".into(),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={}", free_port()?),
            ]),
        )?;
        self.spawn("containerd", Command::new("containerd").arg("--config").arg(&configs.containerd))?;
        let host = self.host.as_ref().context("node host state")?;
        let socket = host.containerd_socket();
        self.wait_for("containerd", Duration::from_secs(30), || socket.exists())?;
        node::import_images(host, &images)?;
        self.spawn("kube-proxy", Command::new(bin.join("kube-proxy")).arg(format!("--config={}", configs.kube_proxy.display())))?;
        self.spawn(
            "kubelet",
            Command::new(bin.join("kubelet")).args([
                format!("--config={}", configs.kubelet.display()),
                kubeconfig,
                format!("--root-dir={}", self.dir.join("kubelet").display()),
                format!("--cert-dir={}", self.dir.join("kubelet/pki").display()),
                format!("--node-ip={}", node::GATEWAY),
                format!("--hostname-override={}", node::NODE_NAME),
                "-v=1".into(),
            ]),
        )?;
        let kubectl = |args: &[&str], stdin: Option<String>| -> Result<String> {
            let mut cmd = Command::new(bin.join("kubectl"));
            cmd.arg(format!("--kubeconfig={}", self.kubeconfig.display())).args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
            cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
            let mut child = cmd.spawn()?;
            if let Some(input) = stdin {
                use std::io::Write;
                child.stdin.take().context("kubectl stdin")?.write_all(input.as_bytes())?;
            }
            let out = child.wait_with_output()?;
            if !out.status.success() {
                bail!("kubectl {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
            }
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        };
        let ready = r#"jsonpath={.status.conditions[?(@.type=="Ready")].status}"#;
        self.wait_for("kubelet", Duration::from_secs(120), || {
            kubectl(&["get", "node", node::NODE_NAME, "-o", ready], None).is_ok_and(|s| s.trim() == "True")
        })?;
        let objects = serde_json::json!({"apiVersion": "v1", "kind": "List",
            "items": node::coredns_objects(&format!("localhost/toolhive-node/coredns:{}", node::COREDNS_TAG))});
        kubectl(&["apply", "-f", "-"], Some(objects.to_string()))?;
        let available = r#"jsonpath={.status.availableReplicas}"#;
        self.wait_for("kubelet", Duration::from_secs(120), || {
            kubectl(&["-n", "kube-system", "get", "deployment", "coredns", "-o", available], None).is_ok_and(|s| s.trim() == "1")
        })?;

        // Prometheus on the host: it reaches pod IPs over the bridge.
        let port = free_port()?;
        let config = self.dir.join("prometheus.yml");
        write(&self.prometheus_targets(), "[]")?;
        write(&config, &node::prometheus_config(&self.prometheus_targets()))?;
        self.spawn(
            "prometheus",
            Command::new("prometheus").args([
                format!("--config.file={}", config.display()),
                format!("--storage.tsdb.path={}", self.dir.join("prometheus").display()),
                format!("--web.listen-address=127.0.0.1:{port}"),
                "--log.level=warn".into(),
            ]),
        )?;
        self.wait_for("prometheus", Duration::from_secs(60), || http_status(port, "/-/ready") == Some(200))?;
        self.prometheus_port = Some(port);
        write(&self.dir.join("prometheus-port"), &port.to_string())
    }

    fn write_kubeconfig(&self, admin: &PemPair) -> Result<()> {
        use base64::{Engine, engine::general_purpose::STANDARD};
        let encode = |b: &[u8]| STANDARD.encode(b);
        let kc = format!(
            "apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: admin
  user:
    client-certificate-data: {cert}
    client-key-data: {key}
contexts:
- name: local
  context: {{cluster: local, user: admin, namespace: default}}
current-context: local
",
            server = self.server,
            ca = encode(self.ca_pem.as_bytes()),
            cert = encode(admin.cert_pem.as_bytes()),
            key = encode(admin.key_pem.as_bytes()),
        );
        write(&self.kubeconfig, &kc)
    }

    fn spawn(&mut self, name: &str, cmd: &mut Command) -> Result<()> {
        let log = fs::File::create(self.dir.join(format!("{name}.log")))?;
        self.launch(name, cmd, log)?;
        let program = cmd.get_program().to_os_string();
        let args = cmd.get_args().map(|a| a.to_os_string()).collect();
        self.commands.lock().unwrap().push((name.to_string(), program, args));
        Ok(())
    }

    /// Starts `cmd` as `name`, logging to `log`, in its own process group.
    fn launch(&self, name: &str, cmd: &mut Command, log: fs::File) -> Result<()> {
        cmd.stdout(log.try_clone()?).stderr(log).stdin(Stdio::null()).process_group(0);
        die_with_spawning_thread(cmd);
        let child = cmd.spawn().with_context(|| format!("starting {name}"))?;
        self.children.lock().unwrap().push((name.to_string(), child));
        Ok(())
    }

    /// Kills a component (SIGKILL, as a crash would) and waits for it to be gone.
    pub fn kill(&self, component: &str) {
        let mut children = self.children.lock().unwrap();
        if let Some(i) = children.iter().position(|(name, _)| name == component) {
            let (_, mut child) = children.remove(i);
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
        }
    }

    /// Starts a component killed by [`ControlPlane::kill`] again, as it was started,
    /// and waits until the API server is ready (from this thread, which must outlive it).
    pub fn start_again(&self, component: &str) -> Result<()> {
        let (program, args) = self
            .commands
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|(name, _, _)| name == component)
            .map(|(_, p, a)| (p.clone(), a.clone()))
            .with_context(|| format!("{component} was never started"))?;
        let log = fs::OpenOptions::new().create(true).append(true).open(self.dir.join(format!("{component}.log")))?;
        self.launch(component, Command::new(program).args(args), log)?;
        self.wait_for(component, Duration::from_secs(120), || https_readyz(self).unwrap_or(false))
    }

    /// Waits until `ready` holds, failing early (with the log tail) if `component` exits.
    fn wait_for(&self, component: &str, timeout: Duration, mut ready: impl FnMut() -> bool) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if ready() {
                return Ok(());
            }
            let exited = self
                .children
                .lock()
                .unwrap()
                .iter_mut()
                .find(|(name, _)| name == component)
                .and_then(|(_, child)| child.try_wait().ok().flatten());
            if let Some(status) = exited {
                bail!("{component} exited ({status}):\n{}", self.log_tail(component, 20));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        bail!("timed out after {timeout:?} waiting for {component}:\n{}", self.log_tail(component, 20))
    }

    /// The process id of a running component ("etcd", "kube-apiserver", ...).
    pub fn pid(&self, component: &str) -> Option<u32> {
        self.children.lock().unwrap().iter().find(|(name, _)| name == component).map(|(_, child)| child.id())
    }

    /// Stops every child (SIGTERM, then SIGKILL after a grace period), newest first.
    pub fn stop(&self) {
        if let Some(host) = &self.host {
            // The kubelet first (it would restart what is killed), then the containers,
            // which outlive containerd.
            self.kill("kubelet");
            host.stop_containers();
        }
        let mut children = std::mem::take(&mut *self.children.lock().unwrap());
        while let Some((_, mut child)) = children.pop() {
            let pgid = child.id() as i32;
            unsafe { libc::kill(-pgid, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
            let _ = child.wait();
        }
        if let Some(host) = &self.host {
            host.restore();
        }
        if self.owns_dir {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }

    /// The tail of a component's log, for failure messages.
    pub fn log_tail(&self, name: &str, lines: usize) -> String {
        let text = fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    pub async fn config(&self) -> Result<Config> {
        let kc = Kubeconfig::read_from(&self.kubeconfig)?;
        Ok(Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?)
    }

    /// An admin (system:masters) client.
    pub async fn client(&self) -> Result<Client> {
        Ok(Client::try_from(self.config().await?)?)
    }

    /// A client that impersonates `user` (e.g. `system:serviceaccount:ns:name`), so the
    /// API server's RBAC decides what it may do.
    pub async fn client_as(&self, user: &str, groups: &[&str]) -> Result<Client> {
        let mut config = self.config().await?;
        config.auth_info.impersonate = Some(user.to_string());
        if !groups.is_empty() {
            config.auth_info.impersonate_groups = Some(groups.iter().map(|g| g.to_string()).collect());
        }
        Ok(Client::try_from(config)?)
    }

    /// A client impersonating a ServiceAccount, with the groups the API server gives them.
    pub async fn client_as_service_account(&self, namespace: &str, name: &str) -> Result<Client> {
        let ns_group = format!("system:serviceaccounts:{namespace}");
        self.client_as(&format!("system:serviceaccount:{namespace}:{name}"), &["system:serviceaccounts", &ns_group, "system:authenticated"])
            .await
    }

    /// Creates a namespace with a unique name starting with `prefix`.
    pub async fn namespace(&self, client: &Client, prefix: &str) -> Result<String> {
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("{prefix}-{}-{n}", std::process::id() % 100_000);
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name}
        }))?;
        Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await?;
        Ok(name)
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One control plane for the whole test binary, started on first use and stopped
/// when the process exits (also when tests panic).
pub fn shared() -> &'static ControlPlane {
    static SHARED: OnceLock<Result<&'static ControlPlane, String>> = OnceLock::new();
    let started = SHARED.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        // The spawning thread must outlive the children (PR_SET_PDEATHSIG fires when
        // the thread that forked exits), so it parks forever after starting them.
        std::thread::Builder::new()
            .name("controlplane-keeper".into())
            .spawn(move || {
                let started = ControlPlane::start(Options::default());
                match started {
                    Ok(cp) => {
                        let cp: &'static ControlPlane = Box::leak(Box::new(cp));
                        tx.send(Ok(cp)).ok();
                        loop {
                            std::thread::park();
                        }
                    }
                    Err(e) => {
                        tx.send(Err(e)).ok();
                    }
                }
            })
            .expect("spawn controlplane thread");
        let cp = rx.recv().map_err(|e| e.to_string())?.map_err(|e| format!("{e:#}"))?;
        // Statics are never dropped; stop the children and remove the state at exit.
        extern "C" fn stop_at_exit() {
            if let Some(cp) = SHARED_FOR_EXIT.get() {
                cp.stop();
            }
        }
        static SHARED_FOR_EXIT: OnceLock<&'static ControlPlane> = OnceLock::new();
        SHARED_FOR_EXIT.set(cp).ok();
        unsafe { libc::atexit(stop_at_exit) };
        Ok(cp)
    });
    match started {
        Ok(cp) => cp,
        Err(e) => panic!("control plane failed to start: {e}"),
    }
}

/// `GET path` over plain HTTP/1.0 on 127.0.0.1:`port`; the whole response, head included.
pub fn http_get_plain(port: u16, path: &str) -> Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    Ok(body)
}

/// The status code of `GET path` on 127.0.0.1:`port`; None when nothing answers.
pub fn http_status(port: u16, path: &str) -> Option<u16> {
    http_get_plain(port, path).ok()?.split_whitespace().nth(1)?.parse().ok()
}

fn https_readyz(cp: &ControlPlane) -> Result<bool> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let client = cp.client().await?;
        let req = http::Request::get("/readyz").body(Vec::new())?;
        match tokio::time::timeout(Duration::from_secs(3), client.request_text(req)).await {
            Ok(Ok(text)) => Ok(text.trim() == "ok"),
            _ => Ok(false),
        }
    })
}
