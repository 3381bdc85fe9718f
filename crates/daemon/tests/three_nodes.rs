//! Three nodes on one machine: three `kcored` processes in three network namespaces
//! (one `server --agent`, two `agent`s joining with the server's token), their underlay
//! links on a test switch (a bridge in a fourth namespace), pod networks joined by the
//! VXLAN overlay. Checked: the scheduler spreads pods; a DaemonSet pod runs on every
//! node; pods reach pods on other nodes by IP and through a Service; NetworkPolicies
//! applied with kubectl allow and deny pod traffic on one node and across nodes;
//! LoadBalancer Services get pool addresses (`--service-lb-pool`) that a client
//! outside the nodes (a fifth namespace on the switch) reaches; a NetworkPolicy change
//! leaves an established allowed connection alone; a node-mode LoadBalancer lists the
//! nodes' addresses and is reached on each; `externalTrafficPolicy: Local` keeps the
//! client's address (pool and node mode); Ingress on two nodes (the server's agent and a
//! joined one, each reading the TLS Secrets with its node credential) serves TLS by SNI
//! for two hosts and a rotated Secret (a self-signed default certificate for a host
//! without a Secret), Exact vs Prefix, classes and a WebSocket; StatefulSet pods resolve each other by
//! `<pod>.<service>.<namespace>.svc.cluster.local` and an ExternalName Service answers
//! with a CNAME; an agent killed has its pods replaced on the others, and its
//! load-balancer address taken over by another node, once the node is declared lost.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use common::*;

const SERVER_IP: &str = "10.99.0.1";
/// The LoadBalancer pool: addresses on the switch's subnet.
const LB_POOL: &str = "10.99.0.100-10.99.0.109";
/// The nodes' addresses on the switch.
const NODE_IPS: [&str; 3] = ["10.99.0.1", "10.99.0.2", "10.99.0.3"];
/// The nodes serving Ingress: n0 (the server's own agent) and n1 (a joined agent), each
/// with its node credential only, which reads just the TLS Secrets the Ingresses name;
/// n2 runs without Ingress (`--no-ingress`).
const INGRESS_IPS: [&str; 2] = ["10.99.0.1", "10.99.0.2"];
/// The Ingress node most checks go through.
const INGRESS_IP: &str = INGRESS_IPS[0];
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
        let node_ip = format!("10.99.0.{}", i + 1);
        let name = format!("n{i}");
        let mut args = vec![
            "agent",
            "--server",
            &format!("https://{SERVER_IP}:6443"),
            "--token",
            &token,
            "--node-ip",
            &node_ip,
            "--node-name",
            &name,
        ]
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>();
        // n0 and n1 serve Ingress
        if i == 2 {
            args.push("--no-ingress".into());
        }
        m.start_kcored(&args.iter().map(String::as_str).collect::<Vec<_>>());
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
    apply(server, ECHO);
    node_mode_and_local(server, &client);
    ingress(server, &client);
    statefulset_dns(server);
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
    nodes[0].kubectl(&["delete", "daemonset", "web", "echo"]);
    nodes[0].kubectl(&["delete", "service", "web", "echo"]);
    nodes[0].kubectl(&["delete", "configmap", "echo-scripts"]);
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
            ip.starts_with("10.99.0.") && (100..=109).contains(&last),
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
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}, labels: {{role: {role}}}}}\nspec:\n  nodeSelector: {{kubernetes.io/hostname: {node}}}\n  containers:\n  - {{name: web, image: kcore.local/demo:v1, args: [web, 0.0.0.0:8080]}}\n  - {{name: echo, image: kcore.local/demo:v1, command: [nc, -ll, -p, '9000', -e, cat]}}\n---\n"
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
    // a connection that is allowed now: it must outlive the policy changes below
    let mut held = Held::open(server, b, &a, 9000);
    held.echo("before");
    // an allow by namespace label lets exactly that namespace in (a new policy: the
    // table is replaced, the established connection stays)
    apply(
        server,
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: allow-team-other}\nspec:\n  podSelector: {matchLabels: {role: target}}\n  ingress:\n  - from: [{namespaceSelector: {matchLabels: {team: other}}}]\n",
    );
    expect_reach(server, d, &c, true);
    expect_reach(server, d, &a, true);
    held.echo("after a policy was added");
    // egress: this namespace's clients may reach only np-a's address
    apply(
        server,
        &format!("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: egress-to-a}}\nspec:\n  podSelector: {{matchLabels: {{role: client}}}}\n  policyTypes: [Egress]\n  egress:\n  - to: [{{ipBlock: {{cidr: {a}/32}}}}]\n"),
    );
    expect_reach(server, b, &c, false);
    expect_reach(server, b, &a, true);
    held.echo("after an egress policy for its client");
    // the allow it came in by changes (its peers now select nothing): new connections
    // from b are refused, the established one keeps flowing, as conntrack has it
    apply(
        server,
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: allow-clients}\nspec:\n  podSelector: {matchLabels: {role: target}}\n  ingress:\n  - from: [{podSelector: {matchLabels: {role: nobody}}}]\n",
    );
    expect_reach(server, b, &a, false);
    held.echo("after the allow it came in by was narrowed");
    drop(held);
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

/// A TCP connection held open from a pod to an echo server (`nc` in `kubectl exec -i`):
/// lines written come back on the same connection.
struct Held {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    what: String,
}

impl Held {
    fn open(server: &Machine, (ns, pod): (&str, &str), ip: &str, port: u16) -> Held {
        use std::io::BufRead;
        let mut c = in_netns(&server.netns, "kubectl");
        c.arg("--kubeconfig")
            .arg(server.kubeconfig())
            .args([
                "exec",
                "-i",
                "-n",
                ns,
                pod,
                "--",
                "nc",
                ip,
                &port.to_string(),
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit());
        let mut child = c.spawn().unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(out).lines() {
                let Ok(l) = l else { return };
                if tx.send(l).is_err() {
                    return;
                }
            }
        });
        Held {
            child,
            lines,
            what: format!("{ns}/{pod} -> {ip}:{port}"),
        }
    }

    /// Sends `msg` and expects it back within 20 s.
    fn echo(&mut self, msg: &str) {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{msg}").unwrap();
        stdin.flush().unwrap();
        let back = self
            .lines
            .recv_timeout(std::time::Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("no echo of {msg:?} on {}: {e}", self.what));
        assert_eq!(back, msg, "{}", self.what);
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An echo DaemonSet from busybox: `httpd` on 8080 answers `/cgi-bin/ip` with the
/// client's address as the pod sees it; `nc` on 9000 answers an HTTP Upgrade with
/// `101` and then echoes bytes (a WebSocket backend for the proxy: frames pass as
/// bytes).
const ECHO: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: echo-scripts}
data:
  ip: |
    #!/bin/sh
    printf 'Content-Type: text/plain\r\n\r\n%s\n' "$REMOTE_ADDR"
  ws: |
    #!/bin/sh
    while read -r l; do
      l=$(printf '%s' "$l" | tr -d '\r')
      [ -z "$l" ] && break
    done
    printf 'HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n'
    exec cat
  start: |
    mkdir -p /www/cgi-bin && cp /scripts/ip /www/cgi-bin/ip && chmod 755 /www/cgi-bin/ip
    nc -ll -p 9000 -e /scripts/ws &
    exec httpd -f -p 8080 -h /www
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: echo}
spec:
  selector: {matchLabels: {app: echo}}
  template:
    metadata: {labels: {app: echo}}
    spec:
      containers:
      - name: echo
        image: kcore.local/demo:v1
        command: [sh, /scripts/start]
        readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
        volumeMounts: [{name: scripts, mountPath: /scripts}]
      volumes: [{name: scripts, configMap: {name: echo-scripts, defaultMode: 0755}}]
---
apiVersion: v1
kind: Service
metadata: {name: echo}
spec:
  selector: {app: echo}
  ports: [{name: http, port: 8080}, {name: ws, port: 9000}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
"#;

/// The body of a GET of `/cgi-bin/ip` at `ip:port` from `client`, when it answers 200.
fn client_ip_seen(client: &Machine, ip: &str, port: u16) -> Option<String> {
    let addr = format!("{ip}:{port}").parse().unwrap();
    match http(&client.netns, addr, "GET", "echo", "/cgi-bin/ip", "") {
        // httpd listens on IPv6 and shows IPv4 peers as mapped addresses in brackets
        Ok((200, body)) => Some(
            body.trim()
                .trim_matches(['[', ']'])
                .trim_start_matches("::ffff:")
                .to_owned(),
        ),
        _ => None,
    }
}

/// Node mode next to the pool (by `loadBalancerClass: kcore.dev/node`): the ingress
/// lists every node's address and the client reaches the port on each; with
/// `externalTrafficPolicy: Local` the pods see the client's own address, in node mode
/// and in pool mode.
fn node_mode_and_local(server: &Machine, client: &Machine) {
    wait_for(120, "a ready echo pod on every node", || {
        (pods_by_node(server, "app=echo").len() == 3).then_some(())
    });
    apply(
        server,
        &format!(
            r#"apiVersion: v1
kind: Service
metadata: {{name: web-nodes}}
spec:
  type: LoadBalancer
  loadBalancerClass: {class}
  selector: {{app: web}}
  ports: [{{port: 8088, targetPort: 8080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: echo-nodes-local}}
spec:
  type: LoadBalancer
  loadBalancerClass: {class}
  externalTrafficPolicy: Local
  selector: {{app: echo}}
  ports: [{{port: 8091, targetPort: 8080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: echo-pool-local}}
spec:
  type: LoadBalancer
  externalTrafficPolicy: Local
  selector: {{app: echo}}
  ports: [{{port: 8090, targetPort: 8080}}]
"#,
            class = kcore_reconcile::NODE_LB_CLASS
        ),
    );
    let ingress_ips = |name: &str| -> Vec<String> {
        let s = server.kubectl_json(&["get", "service", name]);
        let mut v: Vec<String> = s["status"]["loadBalancer"]["ingress"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i["ip"].as_str().map(str::to_owned))
            .collect();
        v.sort();
        v
    };
    for name in ["web-nodes", "echo-nodes-local"] {
        let ips = wait_for(60, &format!("{name} listing the nodes"), || {
            let v = ingress_ips(name);
            (v == NODE_IPS).then_some(v)
        });
        eprintln!("{name}: node mode, ingress {ips:?}");
    }
    for ip in NODE_IPS {
        let addr = format!("{ip}:8088").parse().unwrap();
        wait_for(30, &format!("web-nodes on {ip} from the client"), || {
            matches!(
                http(&client.netns, addr, "GET", "web", "/healthz", ""),
                Ok((200, _))
            )
            .then_some(())
        });
        let seen = wait_for(30, &format!("echo-nodes-local on {ip}"), || {
            client_ip_seen(client, ip, 8091)
        });
        assert_eq!(
            seen, CLIENT_IP,
            "the pod behind {ip}:8091 (Local) saw {seen}"
        );
    }
    let pool_ip = wait_for(60, "a pool address for echo-pool-local", || {
        ingress_ips("echo-pool-local").into_iter().next()
    });
    let seen = wait_for(30, &format!("echo-pool-local at {pool_ip}"), || {
        client_ip_seen(client, &pool_ip, 8090)
    });
    assert_eq!(
        seen, CLIENT_IP,
        "the pod behind {pool_ip}:8090 (Local) saw {seen}"
    );
    let table = server.kubectl(&["get", "service", "web-nodes"]);
    assert!(table.contains("10.99.0.1,10.99.0.2,10.99.0.3"), "{table}");
    server.kubectl(&[
        "delete",
        "service",
        "web-nodes",
        "echo-nodes-local",
        "echo-pool-local",
    ]);
}

/// `curl` from the client to the HTTPS port of the Ingress node `at`, with `host`
/// resolved to it; `(success, output)`.
fn curl_ingress_at(
    client: &Machine,
    at: &str,
    host: &str,
    path: &str,
    extra: &[&str],
) -> (bool, String) {
    let mut c = in_netns(&client.netns, "curl");
    c.args(["-sS", "--max-time", "5", "--resolve"])
        .arg(format!("{host}:443:{at}"))
        .args(extra)
        .arg(format!("https://{host}{path}"));
    let out = c.output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// [`curl_ingress_at`] the first Ingress node.
fn curl_ingress(client: &Machine, host: &str, path: &str, extra: &[&str]) -> (bool, String) {
    curl_ingress_at(client, INGRESS_IP, host, path, extra)
}

/// Ingress through kcored on n0 and n1, whose agents read the TLS Secrets with their
/// node credentials: TLS by SNI for two hosts (each certificate verified for its name,
/// over HTTP/1.1 and HTTP/2, on both nodes), a rotated Secret served on both nodes, a
/// host whose Secret is missing served with the self-signed default, Exact vs Prefix,
/// another class's Ingress left alone, the status listing both nodes, and a WebSocket
/// through it.
fn ingress(server: &Machine, client: &Machine) {
    let dir = tempfile::tempdir().unwrap();
    let ca = kcore_tls::Ca::load_or_create(dir.path()).unwrap();
    for host in ["a.test", "b.test"] {
        let ck = ca
            .issue(host, &[host.to_owned()], kcore_tls::Usage::Server)
            .unwrap();
        ck.write(dir.path(), host).unwrap();
        let (crt, key) = (
            dir.path().join(format!("{host}.crt")),
            dir.path().join(format!("{host}.key")),
        );
        server.kubectl(&[
            "create",
            "secret",
            "tls",
            &format!("{host}-tls"),
            "--cert",
            crt.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ]);
    }
    let rule = |host: &str, path: &str, ty: &str, svc: &str, port: u16| {
        format!("  - host: {host}\n    http:\n      paths:\n      - {{path: {path}, pathType: {ty}, backend: {{service: {{name: {svc}, port: {{number: {port}}}}}}}}}\n")
    };
    let yaml = [
        "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: other}\nspec: {controller: example.com/other}\n---\n".to_owned(),
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: tls}\nspec:\n  ingressClassName: kcore\n  tls:\n  - {hosts: [a.test], secretName: a.test-tls}\n  - {hosts: [b.test], secretName: b.test-tls}\n  - {hosts: [c.test], secretName: missing-tls}\n  rules:\n".to_owned(),
        rule("a.test", "/", "Prefix", "web", 80),
        rule("b.test", "/healthz", "Exact", "web", 80),
        rule("c.test", "/", "Prefix", "web", 80),
        "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: ws}\nspec:\n  ingressClassName: kcore\n  rules:\n".to_owned(),
        rule("ws.test", "/", "Prefix", "echo", 9000),
        "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: elsewhere}\nspec:\n  ingressClassName: other\n  rules:\n".to_owned(),
        rule("o.test", "/", "Prefix", "web", 80),
    ]
    .concat();
    apply(server, &yaml);
    let cacert = dir.path().join("ca.crt");
    let cacert = cacert.to_str().unwrap();
    // each host's own certificate, verified against the CA for its name (SNI), on each
    // Ingress node
    for (at, host) in INGRESS_IPS
        .iter()
        .flat_map(|at| ["a.test", "b.test"].map(|h| (*at, h)))
    {
        let out = wait_for(
            60,
            &format!("https://{host}/healthz through the Ingress node {at}"),
            || {
                let (ok, out) =
                    curl_ingress_at(client, at, host, "/healthz", &["--cacert", cacert]);
                (ok && out.trim() == "ok").then_some(out)
            },
        );
        assert_eq!(out.trim(), "ok");
        let (ok, out) = curl_ingress_at(
            client,
            at,
            host,
            "/healthz",
            &[
                "--cacert",
                cacert,
                "--http2",
                "-o",
                "/dev/null",
                "-w",
                "%{http_version} %{http_code}",
            ],
        );
        assert!(
            ok && out.trim() == "2 200",
            "{host} over HTTP/2 through {at}: {out}"
        );
    }
    // Exact: only the path itself; Prefix: the path and below
    let (ok, out) = curl_ingress(
        client,
        "b.test",
        "/healthz/more",
        &["--cacert", cacert, "-o", "/dev/null", "-w", "%{http_code}"],
    );
    assert!(
        ok && out.trim() == "404",
        "b.test Exact /healthz/more: {out}"
    );
    let (ok, out) = curl_ingress(client, "a.test", "/", &["--cacert", cacert]);
    assert!(ok && out.contains("from web"), "a.test Prefix /: {out}");
    // a host whose Secret does not exist: the default certificate, not a failed
    // handshake (the CA does not vouch for it; -k and the subject shown)
    let (ok, out) = curl_ingress(client, "c.test", "/healthz", &["--cacert", cacert]);
    assert!(!ok, "the default certificate passed verification: {out}");
    let (ok, out) = curl_ingress(client, "c.test", "/healthz", &["-k", "-v"]);
    assert!(
        // the body (stdout) comes first, then curl's verbose report
        ok && out.contains(kcore_node::INGRESS_DEFAULT_CERT_SUBJECT) && out.starts_with("ok\n"),
        "c.test with the default certificate: {out}"
    );
    // plain HTTP for a TLS host: redirected to HTTPS
    let at: std::net::SocketAddr = format!("{INGRESS_IP}:80").parse().unwrap();
    let r = http(&client.netns, at, "GET", "a.test", "/x", "");
    assert!(matches!(r, Ok((308, _))), "{r:?}");
    // another class's Ingress is not served
    let r = http(&client.netns, at, "GET", "o.test", "/", "");
    assert!(matches!(r, Ok((404, _))), "{r:?}");
    // a Secret rotated (a certificate of another CA): every Ingress node serves the new
    // one as soon as its watch delivers it
    let dir2 = tempfile::tempdir().unwrap();
    let ca2 = kcore_tls::Ca::load_or_create(dir2.path()).unwrap();
    let rotated = ca2
        .issue("a.test", &["a.test".to_owned()], kcore_tls::Usage::Server)
        .unwrap();
    let b64 = |s: &str| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(s)
    };
    apply(
        server,
        &serde_json::json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "a.test-tls", "namespace": "default"},
            "type": "kubernetes.io/tls",
            "data": {"tls.crt": b64(&rotated.cert_pem), "tls.key": b64(&rotated.key_pem)}})
        .to_string(),
    );
    let cacert2 = dir2.path().join("ca.crt");
    let cacert2 = cacert2.to_str().unwrap();
    for at in INGRESS_IPS {
        wait_for(
            30,
            &format!("the rotated a.test certificate on {at}"),
            || {
                let (ok, out) =
                    curl_ingress_at(client, at, "a.test", "/healthz", &["--cacert", cacert2]);
                (ok && out.trim() == "ok").then_some(())
            },
        );
    }
    // the status lists the nodes serving it
    wait_for(30, "the Ingress status", || {
        let i = server.kubectl_json(&["get", "ingress", "tls"]);
        let mut ips: Vec<String> = i["status"]["loadBalancer"]["ingress"]
            .as_array()?
            .iter()
            .filter_map(|a| a["ip"].as_str().map(str::to_owned))
            .collect();
        ips.sort();
        (ips == INGRESS_IPS).then_some(())
    });
    // a WebSocket through the proxy: upgrade, then frames both ways
    let mut s = wait_for(60, "a WebSocket upgrade through the Ingress node", || {
        let mut s = kcore_ns::netns::run_in(&client.netns, move || {
            std::net::TcpStream::connect_timeout(&at, std::time::Duration::from_secs(3))
        })
        .ok()?
        .ok()?;
        use std::io::{Read, Write};
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        s.write_all(b"GET /chat HTTP/1.1\r\nHost: ws.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").ok()?;
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if s.read(&mut b).ok()? != 1 {
                return None;
            }
            head.push(b[0]);
        }
        head.starts_with(b"HTTP/1.1 101").then_some(s)
    });
    for msg in [&b"\x81\x05hello"[..], &b"\x81\x05again"[..]] {
        use std::io::{Read, Write};
        s.write_all(msg).unwrap();
        let mut back = vec![0u8; msg.len()];
        s.read_exact(&mut back).unwrap();
        assert_eq!(back, msg, "echoed through the WebSocket");
    }
    drop(s);
    server.kubectl(&["delete", "ingress", "tls", "ws", "elsewhere"]);
    server.kubectl(&["delete", "ingressclass", "other"]);
    server.kubectl(&["delete", "secret", "a.test-tls", "b.test-tls"]);
}

/// A StatefulSet behind a headless Service: each pod resolves the other by
/// `<pod>.<service>.<namespace>.svc.cluster.local`; an ExternalName Service answers
/// with a CNAME.
fn statefulset_dns(server: &Machine) {
    apply(
        server,
        r#"apiVersion: v1
kind: Service
metadata: {name: sts}
spec:
  clusterIP: None
  selector: {app: sts}
  ports: [{port: 8080}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: sts}
spec:
  serviceName: sts
  replicas: 2
  selector: {matchLabels: {app: sts}}
  template:
    metadata: {labels: {app: sts}}
    spec:
      containers:
      - name: web
        image: kcore.local/demo:v1
        args: ["web", "0.0.0.0:8080"]
        readinessProbe: {httpGet: {path: /healthz, port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: ext}
spec:
  type: ExternalName
  externalName: example.com
"#,
    );
    let ip_of = |name: &str| {
        wait_for(120, &format!("pod {name} ready"), || {
            let p = server.kubectl_json(&["get", "pod", name]);
            let ready = p["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            });
            ready
                .then(|| p["status"]["podIP"].as_str().map(str::to_owned))
                .flatten()
        })
    };
    let ips = [ip_of("sts-0"), ip_of("sts-1")];
    for (from, to) in [(0, 1), (1, 0)] {
        let name = format!("sts-{to}.sts.default.svc.cluster.local");
        wait_for(60, &format!("sts-{from} resolving {name}"), || {
            let (_, out) = server.kubectl_with(
                &server.kubeconfig(),
                &["exec", &format!("sts-{from}"), "--", "nslookup", &name],
            );
            out.contains(&ips[to]).then_some(())
        });
    }
    let out = wait_for(60, "the ExternalName CNAME", || {
        let (_, out) = server.kubectl_with(
            &server.kubeconfig(),
            &[
                "exec",
                "sts-0",
                "--",
                "nslookup",
                "-type=CNAME",
                "ext.default.svc.cluster.local",
            ],
        );
        out.contains("canonical name = example.com").then_some(out)
    });
    eprintln!("ExternalName: {out}");
    server.kubectl(&["delete", "statefulset", "sts", "--wait=false"]);
    server.kubectl(&["delete", "service", "sts", "ext"]);
}
