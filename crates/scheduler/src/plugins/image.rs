//! ImageLocality.

use crate::framework::{CycleState, Plugin, PreScorePlugin, ScorePlugin, Status, MAX_NODE_SCORE};
use crate::model::{NodeId, NodeInfo, PodInfo};
use crate::snapshot::Snapshot;

const MB: i64 = 1024 * 1024;
const MIN_THRESHOLD: i64 = 23 * MB;
const MAX_CONTAINER_THRESHOLD: i64 = 1000 * MB;

/// Favours nodes that already hold the pod's images, scaled by how widely
/// each image is spread (so one node is not a magnet for a popular image).
#[derive(Debug, Default, Clone, Copy)]
pub struct ImageLocality;

impl Plugin for ImageLocality {
    fn name(&self) -> &'static str {
        "ImageLocality"
    }
    fn as_pre_score(&self) -> Option<&dyn PreScorePlugin> {
        Some(self)
    }
    fn as_score(&self) -> Option<&dyn ScorePlugin> {
        Some(self)
    }
}

impl PreScorePlugin for ImageLocality {
    fn pre_score(
        &self,
        _: &mut CycleState,
        pod: &PodInfo,
        snap: &Snapshot,
        _: &[NodeId],
    ) -> Status {
        // No node holds any of the pod's images: every score is 0.
        if pod.images.iter().any(|i| snap.image_nodes.contains_key(i)) {
            Status::success()
        } else {
            Status::skip()
        }
    }
}

impl ScorePlugin for ImageLocality {
    #[inline]
    fn score(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo, snap: &Snapshot) -> i64 {
        if node.images.is_empty() {
            return 0;
        }
        let total = snap.num_nodes().max(1) as f64;
        let mut sum = 0i64;
        for &img in &pod.images {
            if let Some(size) = node.image_size(img) {
                let spread = f64::from(snap.image_nodes.get(&img).copied().unwrap_or(1)) / total;
                sum += (size as f64 * spread) as i64;
            }
        }
        let max = MAX_CONTAINER_THRESHOLD * pod.num_containers.max(1);
        let sum = sum.clamp(MIN_THRESHOLD, max);
        MAX_NODE_SCORE * (sum - MIN_THRESHOLD) / (max - MIN_THRESHOLD)
    }
}
