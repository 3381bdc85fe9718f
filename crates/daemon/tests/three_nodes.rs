//! Three nodes on one machine: three `kcored` processes in three network namespaces
//! (one `server --agent`, two `agent`s joining with the server's token), their underlay
//! links on a test switch (a bridge in a fourth namespace), pod networks joined by the
//! VXLAN overlay. Checked: the scheduler spreads pods; a DaemonSet pod runs on every
//! node; pods reach pods on other nodes by IP and through a Service; NetworkPolicies
//! applied with kubectl allow and deny pod traffic on one node and across nodes;
//! LoadBalancer Services get pool addresses (`--service-lb-pool`) that a client
//! outside the nodes (a fifth namespace on the switch) reaches; an agent killed has its
//! pods replaced on the others, and its load-balancer address taken over by another
//! node, once the node is declared lost.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use common::*;

const SERVER_IP: &str = "10.99.0.1";
/// The LoadBalancer pool: addresses on the switch's subnet.
const LB_POOL: &str = "10.99.0.100-10.99.0.105";
/// The client outside the nodes.
const CLIENT_IP: &str = "10.99.0.50";

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
    let client = Machine::new("kcl", None);
    switch.plug(&client, 3, CLIENT_IP);
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
        "--service-lb-pool",
        LB_POOL,
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

    // LoadBalancer pool mode: each Service gets its own pool address, announced by one
    // node, and the client outside the nodes reaches it
    let lbs = load_balancers(server, &client);
    eprintln!("load-balancer addresses: {lbs:?}");

    network_policies(server);
    // the agent to kill: one announcing an address (the control plane's node stays)
    let (victim, lb_ip, lb_name) = lbs
        .iter()
        .find(|(node, _, _)| node != "n0")
        .cloned()
        .unwrap_or_else(|| panic!("every pool address is announced by n0: {lbs:?}"));

    // an agent killed: its node goes NotReady and its spread pods come back elsewhere;
    // the node is gone from the network too (its switch port down), as a lost machine
    let idx: usize = victim[1..].parse().unwrap();
    nodes[idx].stop_kcored(false);
    switch.m.ip(&["link", "set", &format!("swp{idx}"), "down"]);
    let server = &nodes[0];
    wait_for(60, "the killed node declared lost", || {
        let ready = server.kubectl(&[
            "get",
            "node",
            &victim,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ]);
        (ready.trim() != "True").then_some(())
    });
    let lost = std::time::Instant::now();
    wait_for(60, "the load-balancer address served again", || {
        lb_get(&client, &lb_ip).then_some(())
    });
    let took = lost.elapsed();
    let svc = server.kubectl_json(&["get", "service", &lb_name]);
    let now = svc["metadata"]["annotations"]["kcore.io/lb-announce-node"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(now != victim && !now.is_empty(), "announced by {now:?}");
    assert_eq!(
        svc["status"]["loadBalancer"]["ingress"][0]["ip"],
        lb_ip.as_str()
    );
    eprintln!(
        "load-balancer address {lb_ip} moved from {victim} to {now}: traffic again {:.1} s after the node was declared lost",
        took.as_secs_f64()
    );
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
    let lb_names: Vec<&str> = lbs.iter().map(|l| l.2.as_str()).collect();
    nodes[0].kubectl(&[&["delete", "service"][..], &lb_names].concat());
    nodes[0].kubectl(&["delete", "daemonset", "web"]);
    drop(nodes);
    drop(client);
    drop(switch);
}

/// Whether a GET of the web DaemonSet's `/healthz` through the load-balancer address
/// `ip` (port 80) from `client` answers 200.
fn lb_get(client: &Machine, ip: &str) -> bool {
    let addr = format!("{ip}:80").parse().unwrap();
    matches!(
        http(&client.netns, addr, "GET", "web", "/healthz", ""),
        Ok((200, _))
    )
}

/// Six LoadBalancer Services in front of the web pods: each gets a distinct address of
/// the pool and an announcing node, and the client reaches each. Returns
/// (announcing node, address, Service name) of each.
fn load_balancers(server: &Machine, client: &Machine) -> Vec<(String, String, String)> {
    let yaml: String = (0..6)
        .map(|i| {
            format!(
                "apiVersion: v1\nkind: Service\nmetadata: {{name: lb{i}}}\nspec:\n  type: LoadBalancer\n  selector: {{app: web}}\n  ports: [{{port: 80, targetPort: 8080}}]\n---\n"
            )
        })
        .collect();
    apply(server, &yaml);
    let lbs: Vec<(String, String, String)> = (0..6)
        .map(|i| {
            let name = format!("lb{i}");
            wait_for(60, &format!("a pool address for {name}"), || {
                let s = server.kubectl_json(&["get", "service", &name]);
                let ip = s["status"]["loadBalancer"]["ingress"][0]["ip"].as_str()?;
                let node = s["metadata"]["annotations"]["kcore.io/lb-announce-node"].as_str()?;
                Some((node.to_owned(), ip.to_owned(), name.clone()))
            })
        })
        .collect();
    let mut ips: Vec<&str> = lbs.iter().map(|l| l.1.as_str()).collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 6, "{lbs:?}");
    for (_, ip, name) in &lbs {
        let last: u8 = ip.rsplit('.').next().unwrap().parse().unwrap();
        assert!(
            ip.starts_with("10.99.0.") && (100..=105).contains(&last),
            "{name}: {ip}"
        );
        wait_for(
            30,
            &format!("{name} at {ip} from outside the nodes"),
            || lb_get(client, ip).then_some(()),
        );
    }
    // `kubectl get` shows the address as the external IP
    let table = server.kubectl(&["get", "service", "lb0"]);
    assert!(table.contains(&lbs[0].1), "{table}");
    lbs
}

/// Whether `pod` (in `ns`) gets an answer from `ip:8080` within 2 s, with what
/// kubectl said.
fn reaches(server: &Machine, ns: &str, pod: &str, ip: &str) -> (bool, String) {
    // busybox's nc (its static wget crashes in these images)
    let script =
        format!("printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {ip} 8080 | grep -q '^ok'");
    server.kubectl_with(
        &server.kubeconfig(),
        &["exec", "-n", ns, pod, "--", "sh", "-c", &script],
    )
}

/// Waits until `pod` can (or cannot) reach `ip`, as the policies just applied say.
fn expect_reach(server: &Machine, (ns, pod): (&str, &str), ip: &str, want: bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(40);
    loop {
        let (ok, out) = reaches(server, ns, pod, ip);
        if ok == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{ns}/{pod} {} {ip}; kubectl exec said: {out}",
            if want {
                "never reached"
            } else {
                "still reaches"
            }
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
}

/// NetworkPolicy through kubectl and the agents: pods on n1 and n2 in two namespaces;
/// default deny, an allow by pod label and by namespace label (on one node and across
/// nodes), and egress limited to an ipBlock.
fn network_policies(server: &Machine) {
    let pod = |name: &str, ns: &str, node: &str, role: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}, labels: {{role: {role}}}}}\nspec:\n  nodeSelector: {{kubernetes.io/hostname: {node}}}\n  containers:\n  - {{name: web, image: kcore.local/demo:v1, args: [web, 0.0.0.0:8080]}}\n---\n"
        )
    };
    let yaml = [
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: np-other, labels: {team: other}}\n---\n"
            .to_owned(),
        pod("np-a", "default", "n1", "target"),
        pod("np-b", "default", "n1", "client"),
        pod("np-c", "default", "n2", "target"),
        pod("np-d", "np-other", "n2", "client"),
    ]
    .concat();
    apply(server, &yaml);
    let ip_of = |ns: &str, name: &str| {
        wait_for(120, &format!("pod {ns}/{name} running"), || {
            let p = server.kubectl_json(&["get", "pod", "-n", ns, name]);
            (p["status"]["phase"] == "Running")
                .then(|| p["status"]["podIP"].as_str().map(str::to_owned))
                .flatten()
        })
    };
    let (a, c) = (ip_of("default", "np-a"), ip_of("default", "np-c"));
    ip_of("default", "np-b");
    ip_of("np-other", "np-d");
    let b = ("default", "np-b");
    let d = ("np-other", "np-d");
    // no policy: everything flows
    expect_reach(server, b, &a, true);
    expect_reach(server, d, &c, true);
    // default deny for the targets: on one node (b -> a) and across nodes (b -> c)
    apply(
        server,
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny-targets}\nspec:\n  podSelector: {matchLabels: {role: target}}\n  policyTypes: [Ingress]\n",
    );
    expect_reach(server, b, &a, false);
    expect_reach(server, b, &c, false);
    // an allow by label lets this namespace's clients in, on the node and across
    apply(
        server,
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: allow-clients}\nspec:\n  podSelector: {matchLabels: {role: target}}\n  ingress:\n  - from: [{podSelector: {matchLabels: {role: client}}}]\n",
    );
    expect_reach(server, b, &a, true);
    expect_reach(server, b, &c, true);
    // ... but not the other namespace's
    expect_reach(server, d, &c, false);
    // an allow by namespace label lets exactly that namespace in
    apply(
        server,
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: allow-team-other}\nspec:\n  podSelector: {matchLabels: {role: target}}\n  ingress:\n  - from: [{namespaceSelector: {matchLabels: {team: other}}}]\n",
    );
    expect_reach(server, d, &c, true);
    expect_reach(server, d, &a, true);
    // egress: this namespace's clients may reach only np-a's address
    apply(
        server,
        &format!("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: egress-to-a}}\nspec:\n  podSelector: {{matchLabels: {{role: client}}}}\n  policyTypes: [Egress]\n  egress:\n  - to: [{{ipBlock: {{cidr: {a}/32}}}}]\n"),
    );
    expect_reach(server, b, &c, false);
    expect_reach(server, b, &a, true);
    // `kubectl get networkpolicy` lists them
    let table = server.kubectl(&["get", "networkpolicy"]);
    for name in [
        "deny-targets",
        "allow-clients",
        "allow-team-other",
        "egress-to-a",
    ] {
        assert!(table.contains(name), "{table}");
    }
    server.kubectl(&["delete", "networkpolicy", "--all"]);
    server.kubectl(&["delete", "namespace", "np-other", "--wait=false"]);
    server.kubectl(&["delete", "pod", "np-a", "np-b", "np-c", "--wait=false"]);
}
