//! ClusterIP and NodePort allocation for the kinds whose strategy asks for it (Services).

use super::*;

impl Api {
    pub(super) async fn allocate_service(
        &self,
        obj: &mut Value,
        old: Option<&Value>,
    ) -> Result<(), ApiError> {
        let spec = &mut obj["spec"];
        if !spec.is_object() {
            return Ok(());
        }
        let ty = spec["type"].as_str().unwrap_or("ClusterIP").to_owned();
        // upstream's needsHealthCheck: a LoadBalancer with externalTrafficPolicy Local
        let need_hc = ty == "LoadBalancer" && spec["externalTrafficPolicy"] == "Local";
        if let Some(old) = old {
            if need_hc
                && spec["healthCheckNodePort"].is_null()
                && old["spec"]["healthCheckNodePort"].is_number()
            {
                spec["healthCheckNodePort"] = old["spec"]["healthCheckNodePort"].clone();
            }
            let os = &old["spec"];
            if ty != "ExternalName"
                && spec["clusterIP"].as_str().is_none_or(str::is_empty)
                && os["clusterIP"].is_string()
            {
                spec["clusterIP"] = os["clusterIP"].clone();
                spec["clusterIPs"] = os["clusterIPs"].clone();
            }
            let node_ports = matches!(ty.as_str(), "NodePort" | "LoadBalancer");
            if let (true, Some(ports), Some(old_ports)) = (
                node_ports,
                spec["ports"].as_array_mut(),
                os["ports"].as_array(),
            ) {
                for p in ports.iter_mut().filter(|p| p["nodePort"].is_null()) {
                    if let Some(op) = old_ports
                        .iter()
                        .find(|op| op["port"] == p["port"] && op["nodePort"].is_number())
                    {
                        p["nodePort"] = op["nodePort"].clone();
                    }
                }
            }
        }
        if ty == "ExternalName" {
            return Ok(());
        }
        // NodePorts the user chose must be in the configured range (upstream checks this
        // in its allocator, with this message).
        let (lo, hi) = self.inner.config.node_ports;
        let mut out_of_range = Vec::new();
        let chosen = spec["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
            .map(|(i, p)| (format!("spec.ports[{i}].nodePort"), &p["nodePort"]))
            .chain([(
                "spec.healthCheckNodePort".to_owned(),
                &spec["healthCheckNodePort"],
            )]);
        for (field, v) in chosen {
            if let Some(n) = v.as_i64() {
                if !(i64::from(lo)..=i64::from(hi)).contains(&n) {
                    out_of_range.push(Cause::invalid(
                        field,
                        v,
                        &format!(
                            "provided port is not in the valid range. The range of valid ports is {lo}-{hi}"
                        ),
                    ));
                }
            }
        }
        if !out_of_range.is_empty() {
            let name = obj["metadata"]["name"].as_str().unwrap_or_default();
            return Err(ApiError::invalid("", "Service", name, out_of_range));
        }
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let namespace = obj["metadata"]["namespace"].clone();
        let spec = &mut obj["spec"];
        // Upstream's normalizeClusterIPs on create: `clusterIP` alone means `clusterIPs` too.
        if spec["clusterIPs"].is_null()
            && spec["clusterIP"].as_str().is_some_and(|ip| !ip.is_empty())
        {
            spec["clusterIPs"] = json!([spec["clusterIP"].clone()]);
        }
        let need_ip = spec["clusterIP"].as_str().is_none_or(str::is_empty);
        let need_ports = matches!(ty.as_str(), "NodePort" | "LoadBalancer")
            && spec["ports"]
                .as_array()
                .is_some_and(|ps| ps.iter().any(|p| p["nodePort"].is_null()))
            || need_hc && spec["healthCheckNodePort"].is_null();
        // Addresses and ports the user chose (new on this write) must be free and, for
        // addresses, inside the service range (upstream's allocators).
        let old_spec = old.map(|o| &o["spec"]);
        let chosen_ips: Vec<String> =
            if old_spec.is_some_and(|os| os["clusterIPs"] == spec["clusterIPs"]) {
                Vec::new()
            } else {
                spec["clusterIPs"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .filter(|ip| !ip.is_empty() && *ip != "None")
                    .map(str::to_owned)
                    .collect()
            };
        let old_ports: Vec<i64> = old_spec.map(node_ports_of).unwrap_or_default();
        let chosen_ports: Vec<(String, i64)> = spec["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
            .filter_map(|(i, p)| {
                Some((format!("spec.ports[{i}].nodePort"), p["nodePort"].as_i64()?))
            })
            .chain(
                spec["healthCheckNodePort"]
                    .as_i64()
                    .map(|n| ("spec.healthCheckNodePort".to_owned(), n)),
            )
            .filter(|(_, n)| !old_ports.contains(n))
            .collect();
        if need_ip || need_ports || !chosen_ips.is_empty() || !chosen_ports.is_empty() {
            let _guard = self.inner.alloc.lock().await;
            let info = resources::lookup("", "v1", "services").expect("served");
            let all = self
                .inner
                .storage
                .range(&info.prefix(None), None, 0)
                .await
                .map_err(crate::error::from_store)?;
            let mut ips = std::collections::HashSet::new();
            let mut node_ports = std::collections::HashSet::new();
            for kv in &all.kvs {
                let s: Value = serde_json::from_slice(&kv.value).unwrap_or_default();
                if s["metadata"]["name"] == name.as_str() && s["metadata"]["namespace"] == namespace
                {
                    continue;
                }
                for ip in s["spec"]["clusterIPs"].as_array().into_iter().flatten() {
                    ips.insert(ip.as_str().unwrap_or_default().to_owned());
                }
                if let Some(ip) = s["spec"]["clusterIP"].as_str() {
                    ips.insert(ip.to_owned());
                }
                node_ports.extend(
                    node_ports_of(&s["spec"])
                        .into_iter()
                        .filter_map(|n| u64::try_from(n).ok()),
                );
            }
            let (base, bits) = self.inner.config.service_cidr;
            let mut taken = Vec::new();
            for ip in &chosen_ips {
                let why = match ip.parse::<Ipv4Addr>() {
                    Ok(a) if !in_cidr(a, base, bits) => format!(
                        "failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid range. The range of valid IPs is {base}/{bits}"
                    ),
                    _ if ips.contains(ip) => {
                        format!("failed to allocate IP {ip}: provided IP is already allocated")
                    }
                    _ => continue,
                };
                taken.push(Cause::invalid("spec.clusterIPs", &spec["clusterIPs"], &why));
            }
            for (field, n) in &chosen_ports {
                if u64::try_from(*n).is_ok_and(|n| node_ports.contains(&n)) {
                    taken.push(Cause::invalid(
                        field.clone(),
                        &json!(n),
                        "provided port is already allocated",
                    ));
                }
            }
            if !taken.is_empty() {
                return Err(ApiError::invalid("", "Service", &name, taken));
            }
            // This object's own addresses and ports stay its own.
            for ip in old_spec
                .and_then(|os| os["clusterIPs"].as_array())
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                ips.insert(ip.to_owned());
            }
            node_ports.extend(old_ports.iter().filter_map(|n| u64::try_from(*n).ok()));
            if need_ip {
                let size = 1u32 << (32 - u32::from(bits));
                let base = u32::from(base);
                // .0 is the network, .1 is kept for the `kubernetes` service.
                let ip = (2..size - 1)
                    .map(|i| Ipv4Addr::from(base + i).to_string())
                    .find(|ip| !ips.contains(ip))
                    .ok_or_else(|| ApiError::internal("the service IP range is full"))?;
                spec["clusterIP"] = json!(ip);
                spec["clusterIPs"] = json!([ip]);
            }
            if need_ports {
                let (lo, hi) = self.inner.config.node_ports;
                node_ports.extend(
                    node_ports_of(spec)
                        .into_iter()
                        .filter_map(|n| u64::try_from(n).ok()),
                );
                let mut next = || {
                    let n = (u64::from(lo)..=u64::from(hi))
                        .find(|n| !node_ports.contains(n))
                        .ok_or_else(|| ApiError::internal("the node port range is full"))?;
                    node_ports.insert(n);
                    Ok::<_, ApiError>(json!(n))
                };
                if matches!(ty.as_str(), "NodePort" | "LoadBalancer") {
                    for p in spec["ports"].as_array_mut().into_iter().flatten() {
                        if p["nodePort"].is_null() {
                            p["nodePort"] = next()?;
                        }
                    }
                }
                if need_hc && spec["healthCheckNodePort"].is_null() {
                    spec["healthCheckNodePort"] = next()?;
                }
            }
        }
        if spec["clusterIPs"].is_null() && spec["clusterIP"].is_string() {
            spec["clusterIPs"] = json!([spec["clusterIP"].clone()]);
        }
        Ok(())
    }
}

/// The node ports a Service spec holds: its ports' and its health-check node port.
fn node_ports_of(spec: &Value) -> Vec<i64> {
    spec["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["nodePort"].as_i64())
        .chain(spec["healthCheckNodePort"].as_i64())
        .collect()
}

/// Whether `ip` is inside `base/bits`.
fn in_cidr(ip: Ipv4Addr, base: Ipv4Addr, bits: u8) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
    u32::from(ip) & mask == u32::from(base) & mask
}
