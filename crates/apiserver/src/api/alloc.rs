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
        if let Some(old) = old {
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
        for (i, p) in spec["ports"].as_array().into_iter().flatten().enumerate() {
            if let Some(n) = p["nodePort"].as_i64() {
                if !(i64::from(lo)..=i64::from(hi)).contains(&n) {
                    out_of_range.push(Cause::invalid(
                        format!("spec.ports[{i}].nodePort"),
                        &p["nodePort"],
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
        let spec = &mut obj["spec"];
        let need_ip = spec["clusterIP"].as_str().is_none_or(str::is_empty);
        let need_ports = matches!(ty.as_str(), "NodePort" | "LoadBalancer")
            && spec["ports"]
                .as_array()
                .is_some_and(|ps| ps.iter().any(|p| p["nodePort"].is_null()));
        if need_ip || need_ports {
            let _guard = self.inner.alloc.lock().await;
            let info = resources::lookup("", "v1", "services").expect("served");
            let all = self
                .inner
                .storage
                .range(&info.prefix(None), None, 0)
                .await
                .map_err(|e| ApiError::internal(e.to_string()))?;
            let mut ips = std::collections::HashSet::new();
            let mut node_ports = std::collections::HashSet::new();
            for kv in &all.kvs {
                let s: Value = serde_json::from_slice(&kv.value).unwrap_or_default();
                for ip in s["spec"]["clusterIPs"].as_array().into_iter().flatten() {
                    ips.insert(ip.as_str().unwrap_or_default().to_owned());
                }
                if let Some(ip) = s["spec"]["clusterIP"].as_str() {
                    ips.insert(ip.to_owned());
                }
                for p in s["spec"]["ports"].as_array().into_iter().flatten() {
                    if let Some(n) = p["nodePort"].as_u64() {
                        node_ports.insert(n);
                    }
                }
            }
            if need_ip {
                let (base, bits) = self.inner.config.service_cidr;
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
                for p in spec["ports"].as_array_mut().into_iter().flatten() {
                    if p["nodePort"].is_null() {
                        let n = (u64::from(lo)..=u64::from(hi))
                            .find(|n| !node_ports.contains(n))
                            .ok_or_else(|| ApiError::internal("the node port range is full"))?;
                        node_ports.insert(n);
                        p["nodePort"] = json!(n);
                    }
                }
            }
        }
        if spec["clusterIPs"].is_null() && spec["clusterIP"].is_string() {
            spec["clusterIPs"] = json!([spec["clusterIP"].clone()]);
        }
        Ok(())
    }
}
