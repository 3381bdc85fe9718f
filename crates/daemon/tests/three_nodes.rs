//! Three nodes on one machine: three `kcored` processes in three network namespaces
//! (one `server --agent`, two `agent`s joining with the server's token), their underlay
//! links on a test switch (a bridge in a fourth namespace), pod networks joined by the
//! VXLAN overlay. Checked: the scheduler spreads pods; a DaemonSet pod runs on every
//! node; pods reach pods on other nodes by IP and through a Service; an agent killed
//! has its pods replaced on the others once the node is declared lost.

mod common;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};

use common::*;

const SERVER_IP: &str = "10.99.0.1";

/// The test switch: a bridge in its own namespace, one veth port per machine.
struct Switch {
    m: Machine,
}

impl Switch {
    fn new() -> Switch {
        let m = Machine::new("ksw", None);
        m.ip(&["link", "add", "br0", "type", "bridge"]);
        m.ip(&["link", "set", "br0", "up"]);
        Switch { m }
    }

    /// Plugs `machine` in: its `eth0` gets `ip/24` and a default route.
    fn plug(&self, machine: &Machine, port: usize, ip: &str) {
        // a process in the machine's namespace names it for `ip link ... netns`
        let mut holder: Child = in_netns(&machine.netns, "sleep")
            .arg("60")
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        // only once the holder has entered the namespace does its pid name it
        use std::os::unix::fs::MetadataExt;
        let target = std::fs::metadata(&machine.netns).unwrap().ino();
        wait_for(10, "the holder to enter the namespace", || {
            let ino = std::fs::metadata(format!("/proc/{}/ns/net", holder.id()))
                .ok()?
                .ino();
            (ino == target).then_some(())
        });
        let port_name = format!("swp{port}");
        self.m.ip(&[
            "link",
            "add",
            &port_name,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &holder.id().to_string(),
        ]);
        let _ = holder.kill();
        let _ = holder.wait();
        self.m
            .ip(&["link", "set", &port_name, "master", "br0", "up"]);
        machine.ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
        machine.ip(&["link", "set", "eth0", "up"]);
        machine.ip(&["route", "add", "default", "dev", "eth0"]);
    }
}

fn pods_by_node(server: &Machine, selector: &str) -> BTreeMap<String, Vec<serde_json::Value>> {
    let l = server.kubectl_json(&["get", "pods", "-l", selector]);
    let mut out: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    for p in l["items"].as_array().unwrap() {
        let ready = p["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        });
        if ready && p["metadata"]["deletionTimestamp"].is_null() {
            let node = p["spec"]["nodeName"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            out.entry(node).or_default().push(p.clone());
        }
    }
    out
}

fn apply(server: &Machine, yaml: &str) {
    let mut c = in_netns(&server.netns, "kubectl");
    c.arg("--kubeconfig")
        .arg(server.kubeconfig())
        .args(["apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(yaml.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "kubectl apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const WORKLOADS: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: db}
spec:
  replicas: 1
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      nodeSelector: {kubernetes.io/hostname: n2}
      containers:
      - name: db
        image: kcore.local/demo:v1
        args: ["db", "0.0.0.0:8080", "/data/users.jsonl"]
        readinessProbe: {httpGet: {path: /healthz, port: 8080}, periodSeconds: 1}
        volumeMounts: [{name: data, mountPath: /data}, {name: creds, mountPath: /creds}]
      volumes: [{name: data, emptyDir: {}}, {name: creds, secret: {secretName: db-creds}}]
---
apiVersion: v1
kind: Secret
metadata: {name: db-creds}
stringData: {password: only-for-n2}
---
apiVersion: v1
kind: Service
metadata: {name: db}
spec:
  selector: {app: db}
  ports: [{port: 8080, targetPort: 8080}]
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: kcore.local/demo:v1
        args: ["web", "0.0.0.0:8080"]
        env: [{name: DB_URL, value: "http://db:8080"}]
        readinessProbe: {httpGet: {path: /healthz, port: 8080}, periodSeconds: 1}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: spread}
spec:
  replicas: 6
  selector: {matchLabels: {app: spread}}
  template:
    metadata: {labels: {app: spread}}
    spec:
      tolerations:
      - {key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 2}
      containers:
      - name: web
        image: kcore.local/demo:v1
        args: ["web", "0.0.0.0:8080"]
        resources: {requests: {cpu: 50m, memory: 16Mi}}
"#;

#[test]
#[ignore = "needs root"]
fn three_nodes_joined_by_vxlan() {
    let switch = Switch::new();
    let mut nodes: Vec<Machine> = (0..3)
        .map(|i| Machine::new(&format!("kn{i}"), None))
        .collect();
    for (i, m) in nodes.iter().enumerate() {
        switch.plug(m, i, &format!("10.99.0.{}", i + 1));
        build_demo_image(&m.data, "v1");
    }
    nodes[0].start_kcored(&[
        "server",
        "--agent",
        "--listen",
        "0.0.0.0:6443",
        "--node-ip",
        SERVER_IP,
        "--node-name",
        "n0",
        "--no-ingress",
        "--node-monitor-grace-period",
        "8",
    ]);
    nodes[0].wait_node_ready("n0");
    let token = {
        let mut c = Command::new(KCORED);
        c.arg("token").arg("--data-dir").arg(&nodes[0].data);
        run_ok(c).trim().to_owned()
    };
    for (i, m) in nodes.iter_mut().enumerate().skip(1) {
        m.start_kcored(&[
            "agent",
            "--server",
            &format!("https://{SERVER_IP}:6443"),
            "--token",
            &token,
            "--node-ip",
            &format!("10.99.0.{}", i + 1),
            "--node-name",
            &format!("n{i}"),
            "--no-ingress",
        ]);
    }
    for i in 1..3 {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
        loop {
            nodes[i].check_alive();
            let (ok, out) = nodes[0].kubectl_with(
                &nodes[0].kubeconfig(),
                &[
                    "get",
                    "node",
                    &format!("n{i}"),
                    "-o",
                    "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
                ],
            );
            if ok && out.trim() == "True" {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "node n{i} is not Ready; its log:\n{}",
                nodes[i].logs()
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
    let server = &nodes[0];
    // each node got its own pod subnet
    let nodes_json = server.kubectl_json(&["get", "nodes"]);
    let mut cidrs: Vec<&str> = nodes_json["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["spec"]["podCIDR"].as_str().unwrap())
        .collect();
    cidrs.sort();
    cidrs.dedup();
    assert_eq!(
        cidrs.len(),
        3,
        "pod subnets: {cidrs:?}\n{}",
        server
            .logs()
            .lines()
            .filter(|l| l.contains("ipam") || l.contains("joined"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // the joined nodes' API (port 10250) speaks HTTPS with a certificate the cluster CA
    // signed for the node's IP, and lets in only the API server's client certificate or
    // a token the API server accepts
    let pki = server.data.join("apiserver").join("pki");
    let admin_token = std::fs::read_to_string(server.data.join("apiserver").join("tokens.csv"))
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .trim()
        .to_owned();
    for i in 1..3 {
        let curl = |extra: &[&str]| {
            let mut c = in_netns(&server.netns, "curl");
            c.args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
                .arg(pki.join("ca.crt"))
                .args(extra)
                .arg(format!("https://10.99.0.{}:10250/healthz", i + 1));
            run_ok(c)
        };
        assert_eq!(curl(&[]), "401", "node n{i} without credentials");
        let bearer = format!("Authorization: Bearer {admin_token}");
        assert_eq!(
            curl(&["-H", &bearer]),
            "200",
            "node n{i} with the admin token"
        );
        let (crt, key) = (
            pki.join("apiserver-kubelet-client.crt"),
            pki.join("apiserver-kubelet-client.key"),
        );
        let (crt, key) = (crt.to_str().unwrap(), key.to_str().unwrap());
        assert_eq!(
            curl(&["--cert", crt, "--key", key]),
            "200",
            "node n{i} with the API server's client certificate"
        );
    }

    apply(server, WORKLOADS);
    // a DaemonSet pod on every node
    let web = wait_for(120, "a ready web pod on every node", || {
        let w = pods_by_node(server, "app=web");
        (w.len() == 3).then_some(w)
    });
    // the scheduler spreads the Deployment
    let spread = wait_for(120, "six ready spread pods", || {
        let s = pods_by_node(server, "app=spread");
        (s.values().map(Vec::len).sum::<usize>() == 6).then_some(s)
    });
    assert!(
        spread.len() >= 2,
        "all six pods on one node: {:?}",
        spread.keys()
    );
    wait_for(60, "the db pod", || {
        (pods_by_node(server, "app=db").contains_key("n2")).then_some(())
    });

    // each joined agent runs with its own credential only (`system:node:<name>`, kept in
    // its data directory): n2's agent mounted the db pod's Secret with it; n1's may
    // neither read that Secret nor change n2's Node
    let node_kubeconfig = |i: usize| nodes[i].data.join("node.kubeconfig");
    let (ok, who) = nodes[1].kubectl_with(&node_kubeconfig(1), &["auth", "whoami"]);
    assert!(ok && who.contains("system:node:n1"), "{who}");
    let (ok, out) = nodes[2].kubectl_with(
        &node_kubeconfig(2),
        &[
            "get",
            "secret",
            "db-creds",
            "-o",
            "jsonpath={.data.password}",
        ],
    );
    assert!(
        ok && out.trim() == "b25seS1mb3ItbjI=",
        "n2 reading its pod's Secret: {out}"
    );
    let (ok, out) = nodes[1].kubectl_with(&node_kubeconfig(1), &["get", "secret", "db-creds"]);
    assert!(
        !ok && out.contains(r#"Error from server (Forbidden): secrets "db-creds" is forbidden: User "system:node:n1" cannot get resource "secrets" in API group "" in the namespace "default": no relationship found between node 'n1' and this object"#),
        "n1 reading n2's pod's Secret: {out}"
    );
    let other_node = nodes[1].data.join("n2.json");
    std::fs::write(
        &other_node,
        r#"{"apiVersion":"v1","kind":"Node","metadata":{"name":"n2","labels":{"stolen":"yes"}}}"#,
    )
    .unwrap();
    let (ok, out) = nodes[1].kubectl_with(
        &node_kubeconfig(1),
        &[
            "replace",
            "--raw",
            "/api/v1/nodes/n2",
            "-f",
            other_node.to_str().unwrap(),
        ],
    );
    assert!(
        !ok && out
            .contains(r#"nodes "n2" is forbidden: node "n1" is not allowed to modify node "n2""#),
        "n1 updating n2's Node: {out}"
    );

    // kubectl logs reaches a joined node through its secured API
    let n1_pod = web["n1"][0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    server.kubectl(&["logs", &n1_pod, "--tail=1"]);

    // from each node's web pod: POST/GET through the db Service (the db pod is on n2,
    // so n0's and n1's requests cross the overlay), and node -> pod on another node
    for (i, (node, pods)) in web.iter().enumerate() {
        let ip = pods[0]["status"]["podIP"].as_str().unwrap();
        let addr = format!("{ip}:8080").parse().unwrap();
        // ask from n0's namespace: reaching n1's and n2's pods crosses the overlay
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let r = http(
                &server.netns,
                addr,
                "POST",
                "web",
                "/users",
                &format!(r#"{{"from":"{node}"}}"#),
            );
            if matches!(r, Ok((201, _))) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "POST through the web pod on {node} ({addr}): {r:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
        let (code, body) = http(&nodes[i].netns, addr, "GET", "web", "/users", "").unwrap();
        assert_eq!(code, 200);
        assert!(body.contains(&format!(r#""from":"{node}""#)), "{body}");
    }

    // an agent killed: its node goes NotReady and its spread pods come back elsewhere
    let victim = spread
        .keys()
        .find(|n| n.as_str() != "n0")
        .cloned()
        .expect("a spread pod on an agent node");
    let idx: usize = victim[1..].parse().unwrap();
    nodes[idx].stop_kcored(false);
    let server = &nodes[0];
    let after = wait_for(120, "the lost node's pods replaced elsewhere", || {
        let s = pods_by_node(server, "app=spread");
        (s.values().map(Vec::len).sum::<usize>() == 6 && !s.contains_key(&victim)).then_some(s)
    });
    assert!(!after.contains_key(&victim));
    let ready = server.kubectl(&[
        "get",
        "node",
        &victim,
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
    ]);
    assert_ne!(ready.trim(), "True", "the killed node is still Ready");

    // clean up through the API while the survivors still run
    nodes[0].kubectl(&["delete", "deployment", "spread", "db"]);
    nodes[0].kubectl(&["delete", "daemonset", "web"]);
    drop(nodes);
    drop(switch);
}
