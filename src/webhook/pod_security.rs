//! The Pod Security Standards (baseline and restricted) on `spec.podTemplateSpec`, for
//! the fields a pod template patch can set, plus the policy's own stricter defaults
//! (no privilege escalation, no added capabilities, no root) that `podSecurity`
//! exceptions relax. Every violation is reported with its field path.

use k8s_openapi::api::core::v1::{Capabilities, ContainerPort, PodSecurityContext, PodSpec, SecurityContext};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

use super::policy::PodSecurity;
use super::rules::{FieldError, Rule, Violation};

/// A Pod Security Standards level.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// No standard beyond the policy's own rules.
    Privileged,
    #[default]
    Baseline,
    Restricted,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Level::Privileged => "privileged",
            Level::Baseline => "baseline",
            Level::Restricted => "restricted",
        }
    }
}

/// Capabilities the baseline standard lets a container add.
const BASELINE_CAPABILITIES: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];
/// SELinux types the baseline standard allows.
const BASELINE_SELINUX_TYPES: &[&str] = &["", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"];
/// Sysctls the baseline standard calls safe.
const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];
/// Volume sources the restricted standard allows.
const RESTRICTED_VOLUMES: &[&str] =
    &["configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"];

/// One container of any kind, as these checks read it.
pub struct Container<'a> {
    /// Field path, e.g. `spec.podTemplateSpec.spec.containers[0]`.
    pub path: String,
    pub security: Option<&'a SecurityContext>,
    pub ports: Option<&'a Vec<ContainerPort>>,
}

struct Check<'a> {
    level: Level,
    allowed: &'a PodSecurity,
    out: &'a mut Vec<Violation>,
}

impl Check<'_> {
    fn deny(&mut self, field: String, detail: &str) {
        self.out.push(Violation::new(field, FieldError::Forbidden, Rule::PodSecurity, detail));
    }

    /// A control of a standard: named so the tenant knows which one.
    fn standard(&mut self, field: String, what: &str) {
        let detail = format!("{what} is not allowed by the {} Pod Security Standard", self.level.as_str());
        self.out.push(Violation::new(field, FieldError::Forbidden, Rule::PodSecurity, detail));
    }

    fn baseline(&self) -> bool {
        self.level >= Level::Baseline
    }

    fn restricted(&self) -> bool {
        self.level >= Level::Restricted
    }
}

/// Every pod security violation of a pod template patch at `level`.
pub fn check(
    pod: &PodSpec,
    metadata: Option<&ObjectMeta>,
    containers: &[Container],
    base: &str,
    level: Level,
    allowed: &PodSecurity,
    out: &mut Vec<Violation>,
) {
    let mut c = Check { level, allowed, out };
    if !c.allowed.allow_host_namespaces {
        for (key, on) in [("hostNetwork", pod.host_network), ("hostPID", pod.host_pid), ("hostIPC", pod.host_ipc)] {
            if on == Some(true) {
                c.deny(format!("{base}.{key}"), "host namespaces are not allowed");
            }
        }
    }
    for (i, volume) in pod.volumes.iter().flatten().enumerate() {
        if volume.host_path.is_some() && !c.allowed.allow_host_path {
            c.deny(format!("{base}.volumes[{i}].hostPath"), "hostPath volumes are not allowed");
        }
        if c.restricted()
            && let Some(kind) = volume_kind(volume).filter(|k| !RESTRICTED_VOLUMES.contains(k) && *k != "hostPath")
        {
            c.standard(format!("{base}.volumes[{i}].{kind}"), &format!("a {kind} volume"));
        }
    }
    if let Some(sc) = &pod.security_context {
        pod_context(&mut c, sc, &format!("{base}.securityContext"));
    }
    if let Some(annotations) = metadata.and_then(|m| m.annotations.as_ref())
        && c.baseline()
    {
        for (key, value) in annotations {
            if key.starts_with("container.apparmor.security.beta.kubernetes.io/") && value == "unconfined" {
                c.standard(format!("spec.podTemplateSpec.metadata.annotations[{key}]"), "an unconfined AppArmor profile");
            }
        }
    }
    for container in containers {
        if let Some(sc) = container.security {
            container_context(&mut c, sc, &format!("{}.securityContext", container.path));
        }
        if c.baseline() {
            for (j, port) in container.ports.iter().copied().flatten().enumerate() {
                if port.host_port.is_some_and(|p| p != 0) {
                    c.standard(format!("{}.ports[{j}].hostPort", container.path), "a host port");
                }
            }
        }
    }
}

/// The name of the volume source a volume uses, as written in the spec.
fn volume_kind(volume: &k8s_openapi::api::core::v1::Volume) -> Option<&'static str> {
    let value = serde_json::to_value(volume).ok()?;
    let fields = value.as_object()?;
    const KNOWN: &[&str] = &[
        "awsElasticBlockStore",
        "azureDisk",
        "azureFile",
        "cephfs",
        "cinder",
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "fc",
        "flexVolume",
        "flocker",
        "gcePersistentDisk",
        "gitRepo",
        "glusterfs",
        "hostPath",
        "image",
        "iscsi",
        "nfs",
        "persistentVolumeClaim",
        "photonPersistentDisk",
        "portworxVolume",
        "projected",
        "quobyte",
        "rbd",
        "scaleIO",
        "secret",
        "storageos",
        "vsphereVolume",
    ];
    KNOWN.iter().copied().find(|k| fields.contains_key(*k))
}

fn pod_context(c: &mut Check, sc: &PodSecurityContext, path: &str) {
    if !c.allowed.allow_run_as_root {
        run_as_root(c, sc.run_as_user, sc.run_as_non_root, path);
    }
    if c.baseline() {
        seccomp(c, sc.seccomp_profile.as_ref().map(|p| p.type_.as_str()), path);
        apparmor(c, sc.app_armor_profile.as_ref().map(|p| p.type_.as_str()), path);
        selinux(c, sc.se_linux_options.as_ref(), path);
        if sc.windows_options.as_ref().and_then(|w| w.host_process) == Some(true) {
            c.standard(format!("{path}.windowsOptions.hostProcess"), "a Windows HostProcess pod");
        }
        for (i, sysctl) in sc.sysctls.iter().flatten().enumerate() {
            if !SAFE_SYSCTLS.contains(&sysctl.name.as_str()) {
                c.standard(format!("{path}.sysctls[{i}].name"), &format!("the sysctl {:?}", sysctl.name));
            }
        }
    }
    if c.restricted() && sc.run_as_user == Some(0) && c.allowed.allow_run_as_root {
        c.standard(format!("{path}.runAsUser"), "running as UID 0");
    }
}

fn container_context(c: &mut Check, sc: &SecurityContext, path: &str) {
    if sc.privileged == Some(true) && !c.allowed.allow_privileged {
        c.deny(format!("{path}.privileged"), "privileged containers are not allowed");
    }
    if sc.allow_privilege_escalation == Some(true) && (!c.allowed.allow_privileged || c.restricted()) {
        c.deny(format!("{path}.allowPrivilegeEscalation"), "privilege escalation is not allowed");
    }
    capabilities(c, sc.capabilities.as_ref(), path);
    if !c.allowed.allow_run_as_root {
        run_as_root(c, sc.run_as_user, sc.run_as_non_root, path);
    } else if c.restricted() && sc.run_as_user == Some(0) {
        c.standard(format!("{path}.runAsUser"), "running as UID 0");
    }
    if c.baseline() {
        seccomp(c, sc.seccomp_profile.as_ref().map(|p| p.type_.as_str()), path);
        apparmor(c, sc.app_armor_profile.as_ref().map(|p| p.type_.as_str()), path);
        selinux(c, sc.se_linux_options.as_ref(), path);
        if sc.proc_mount.as_deref().is_some_and(|m| m != "Default") {
            c.standard(format!("{path}.procMount"), "a /proc mount other than Default");
        }
        if sc.windows_options.as_ref().and_then(|w| w.host_process) == Some(true) {
            c.standard(format!("{path}.windowsOptions.hostProcess"), "a Windows HostProcess container");
        }
    }
}

fn capabilities(c: &mut Check, caps: Option<&Capabilities>, path: &str) {
    let added = caps.and_then(|caps| caps.add.as_ref()).filter(|a| !a.is_empty());
    let Some(added) = added else { return };
    if !c.allowed.allow_added_capabilities {
        c.deny(format!("{path}.capabilities.add"), "adding capabilities is not allowed");
        return;
    }
    for (i, cap) in added.iter().enumerate() {
        let name = cap.trim_start_matches("CAP_");
        let allowed = if c.restricted() { name == "NET_BIND_SERVICE" } else { !c.baseline() || BASELINE_CAPABILITIES.contains(&name) };
        if !allowed {
            c.standard(format!("{path}.capabilities.add[{i}]"), &format!("adding the capability {cap}"));
        }
    }
}

fn run_as_root(c: &mut Check, run_as_user: Option<i64>, run_as_non_root: Option<bool>, path: &str) {
    if run_as_user == Some(0) {
        c.deny(format!("{path}.runAsUser"), "running as root (UID 0) is not allowed");
    }
    if run_as_non_root == Some(false) {
        c.deny(format!("{path}.runAsNonRoot"), "runAsNonRoot may not be false");
    }
}

fn seccomp(c: &mut Check, profile: Option<&str>, path: &str) {
    match profile {
        Some("Unconfined") => c.standard(format!("{path}.seccompProfile.type"), "an Unconfined seccomp profile"),
        Some(other) if c.restricted() && other != "RuntimeDefault" && other != "Localhost" => {
            c.standard(format!("{path}.seccompProfile.type"), &format!("the seccomp profile type {other:?}"))
        }
        _ => {}
    }
}

fn apparmor(c: &mut Check, profile: Option<&str>, path: &str) {
    if profile == Some("Unconfined") {
        c.standard(format!("{path}.appArmorProfile.type"), "an Unconfined AppArmor profile");
    }
}

fn selinux(c: &mut Check, options: Option<&k8s_openapi::api::core::v1::SELinuxOptions>, path: &str) {
    let Some(options) = options else { return };
    if !BASELINE_SELINUX_TYPES.contains(&options.type_.as_deref().unwrap_or_default()) {
        c.standard(format!("{path}.seLinuxOptions.type"), "this SELinux type");
    }
    for (field, value) in [("user", &options.user), ("role", &options.role)] {
        if value.as_deref().is_some_and(|v| !v.is_empty()) {
            c.standard(format!("{path}.seLinuxOptions.{field}"), &format!("setting the SELinux {field}"));
        }
    }
}
