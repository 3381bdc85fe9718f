//! Kubernetes' default plugins.

mod basic;
mod image;
mod interpod;
mod preemption;
mod resources;
mod spread;
mod volume;

pub use basic::{NodeAffinity, NodeName, NodePorts, NodeUnschedulable, TaintToleration};
pub use image::ImageLocality;
pub use interpod::InterPodAffinity;
pub use preemption::DefaultPreemption;
pub use resources::{NodeResourcesBalancedAllocation, NodeResourcesFit};
pub use spread::PodTopologySpread;
pub use volume::{
    VolumeBinding, NOT_ENOUGH_SPACE, UNBOUND_IMMEDIATE, VOLUME_NODE_AFFINITY_CONFLICT,
};

use crate::framework::{ClusterEvent, EventAction as A, EventResource as R};

pub(crate) const NODE_ADD: ClusterEvent = ClusterEvent::new(R::Node, A::Add);
pub(crate) const NODE_UPDATE: ClusterEvent = ClusterEvent::new(R::Node, A::Update);
pub(crate) const POD_ADD: ClusterEvent = ClusterEvent::new(R::AssignedPod, A::Add);
pub(crate) const POD_UPDATE: ClusterEvent = ClusterEvent::new(R::AssignedPod, A::Update);
pub(crate) const POD_DELETE: ClusterEvent = ClusterEvent::new(R::AssignedPod, A::Delete);
pub(crate) const SELF_UPDATE: ClusterEvent = ClusterEvent::new(R::UnscheduledPod, A::Update);
pub(crate) const NS_CHANGE: ClusterEvent = ClusterEvent::new(R::Namespace, A::Update);
pub(crate) const PVC_ADD: ClusterEvent = ClusterEvent::new(R::PersistentVolumeClaim, A::Add);
pub(crate) const PVC_UPDATE: ClusterEvent = ClusterEvent::new(R::PersistentVolumeClaim, A::Update);
pub(crate) const PV_ADD: ClusterEvent = ClusterEvent::new(R::PersistentVolume, A::Add);
pub(crate) const PV_UPDATE: ClusterEvent = ClusterEvent::new(R::PersistentVolume, A::Update);
pub(crate) const CLASS_ADD: ClusterEvent = ClusterEvent::new(R::StorageClass, A::Add);
pub(crate) const CLASS_UPDATE: ClusterEvent = ClusterEvent::new(R::StorageClass, A::Update);
pub(crate) const DRIVER_ADD: ClusterEvent = ClusterEvent::new(R::CsiDriver, A::Add);
pub(crate) const DRIVER_UPDATE: ClusterEvent = ClusterEvent::new(R::CsiDriver, A::Update);
pub(crate) const CAPACITY_ADD: ClusterEvent = ClusterEvent::new(R::CsiStorageCapacity, A::Add);
pub(crate) const CAPACITY_UPDATE: ClusterEvent =
    ClusterEvent::new(R::CsiStorageCapacity, A::Update);
