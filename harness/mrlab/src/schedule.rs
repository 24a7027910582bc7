//! How many scenarios boot at once: a budget of cores and memory that each running scenario
//! holds a share of.
//!
//! Under TCG, QEMU runs one thread per vCPU (MTTCG, the default for x86 guests on x86 hosts
//! since QEMU 3.0), and each keeps a core busy; under KVM (a TDX host) each vCPU is a thread
//! too. Bare QEMU+swtpm boots of one VM scale at ~0.97 × cores (issue 17: 16 at once on a
//! 16-core host took 18.7 s, one alone 18.1 s), so the default budget is every core, and a
//! scenario takes `min(vCPUs, cores)` of them: a 4-vCPU guest on a 2-core host runs alone,
//! rather than never. Memory is the second limit: a scenario holds its guest RAM plus
//! [`VM_OVERHEAD`], counted against what the host had available when the run started.

use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Memory a VM needs beside its guest RAM: QEMU's own allocations (TCG translation buffer,
/// device models, ROMs) and swtpm.
pub const VM_OVERHEAD: u64 = 512 << 20;

/// Memory is counted in MiB so the largest host fits a semaphore's permits.
const MEMORY_UNIT: u64 = 1 << 20;

/// What the scheduler may hand out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    /// Cores (vCPU threads) to keep busy.
    pub cores: u32,
    /// Bytes of memory the VMs may take together.
    pub memory: u64,
}

impl Capacity {
    /// This host: every core the process may use (`--jobs` overrides the count), and the
    /// memory `/proc/meminfo` calls available (when that cannot be read, memory is no limit).
    pub fn of_host(jobs: Option<usize>) -> Capacity {
        let cores =
            jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let memory = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|text| mem_available(&text))
            .unwrap_or(u64::MAX);
        Capacity {
            cores: u32::try_from(cores).unwrap_or(u32::MAX).max(1),
            memory,
        }
    }

    /// The cores a scenario with `cpus` vCPUs holds: one per vCPU, at most all of them.
    pub fn cores_for(&self, cpus: u32) -> u32 {
        cpus.clamp(1, self.cores)
    }

    /// The memory a scenario with `guest_memory` bytes of RAM holds, at most all of it.
    pub fn memory_for(&self, guest_memory: u64) -> u64 {
        guest_memory.saturating_add(VM_OVERHEAD).min(self.memory)
    }
}

/// `MemAvailable:` of /proc/meminfo, in bytes.
fn mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))?;
    let kib = line.trim().strip_suffix("kB")?.trim().parse::<u64>().ok()?;
    kib.checked_mul(1024)
}

/// What one scenario asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Demand {
    pub cpus: u32,
    /// Guest RAM in bytes.
    pub memory: u64,
}

/// The shares a running scenario holds; dropping it gives them back.
#[derive(Debug)]
pub struct Admission {
    _cores: OwnedSemaphorePermit,
    _memory: OwnedSemaphorePermit,
}

/// Hands out shares of a [`Capacity`], first come first served: a scenario that does not fit
/// yet waits, and so do the ones behind it, so scenarios start in the order given.
#[derive(Debug, Clone)]
pub struct Budget {
    capacity: Capacity,
    cores: Arc<Semaphore>,
    memory: Arc<Semaphore>,
}

impl Budget {
    pub fn new(capacity: Capacity) -> Budget {
        Budget {
            capacity,
            cores: Arc::new(Semaphore::new(capacity.cores as usize)),
            memory: Arc::new(Semaphore::new(memory_units(capacity.memory) as usize)),
        }
    }

    pub fn capacity(&self) -> Capacity {
        self.capacity
    }

    /// Waits until `demand` fits, then holds its shares until the admission is dropped.
    pub async fn admit(&self, demand: Demand) -> Admission {
        let (cores, memory) = self.shares(demand);
        // Cores first, then memory, by every caller in the same order: no two callers can
        // each hold what the other waits for. The semaphores are never closed.
        let cores = self.cores.clone().acquire_many_owned(cores).await;
        let memory = self.memory.clone().acquire_many_owned(memory).await;
        match (cores, memory) {
            (Ok(cores), Ok(memory)) => Admission {
                _cores: cores,
                _memory: memory,
            },
            _ => unreachable!("the budget's semaphores are never closed"),
        }
    }

    /// [`Budget::admit`] if `demand` fits now.
    pub fn try_admit(&self, demand: Demand) -> Option<Admission> {
        let (cores, memory) = self.shares(demand);
        let cores = self.cores.clone().try_acquire_many_owned(cores).ok()?;
        let memory = self.memory.clone().try_acquire_many_owned(memory).ok()?;
        Some(Admission {
            _cores: cores,
            _memory: memory,
        })
    }

    fn shares(&self, demand: Demand) -> (u32, u32) {
        let memory = memory_units(self.capacity.memory_for(demand.memory));
        (self.capacity.cores_for(demand.cpus), memory)
    }
}

/// Whole MiB, rounded up, capped at what a semaphore can count.
fn memory_units(bytes: u64) -> u32 {
    let units = bytes
        .div_ceil(MEMORY_UNIT)
        .min(Semaphore::MAX_PERMITS as u64);
    u32::try_from(units).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn demand(cpus: u32, memory: u64) -> Demand {
        Demand { cpus, memory }
    }

    #[test]
    fn two_cores_run_two_one_vcpu_scenarios_and_a_four_vcpu_one_alone() {
        let budget = Budget::new(Capacity {
            cores: 2,
            memory: 24 * GIB,
        });
        let first = budget.try_admit(demand(1, 2 * GIB)).expect("one core free");
        let second = budget
            .try_admit(demand(1, 2 * GIB))
            .expect("second core free");
        assert!(
            budget.try_admit(demand(1, 2 * GIB)).is_none(),
            "a third waits"
        );
        drop(first);
        assert!(
            budget.try_admit(demand(4, 2 * GIB)).is_none(),
            "4 vCPUs take both cores: one is still busy"
        );
        drop(second);
        let four = budget
            .try_admit(demand(4, 2 * GIB))
            .expect("both cores free");
        assert!(
            budget.try_admit(demand(1, 2 * GIB)).is_none(),
            "it runs alone"
        );
        drop(four);
        assert!(budget.try_admit(demand(1, 2 * GIB)).is_some());
    }

    #[test]
    fn a_scenario_takes_min_of_vcpus_and_cores() {
        let host = |cores| Capacity {
            cores,
            memory: 24 * GIB,
        };
        assert_eq!(host(2).cores_for(1), 1);
        assert_eq!(host(2).cores_for(4), 2);
        assert_eq!(host(16).cores_for(4), 4);
        // A scenario that asks for no vCPU still boots one.
        assert_eq!(host(16).cores_for(0), 1);
        let budget = Budget::new(host(16));
        let held: Vec<Admission> = (0..4)
            .map(|_| budget.try_admit(demand(4, GIB)).expect("4 × 4 of 16"))
            .collect();
        assert!(budget.try_admit(demand(1, GIB)).is_none());
        drop(held);
    }

    #[test]
    fn memory_is_the_second_limit() {
        // 8 cores but 9 GiB: two 4 GiB guests (plus overhead each) do not fit together.
        let budget = Budget::new(Capacity {
            cores: 8,
            memory: 9 * GIB,
        });
        let big = budget.try_admit(demand(1, 4 * GIB)).expect("fits alone");
        let small = budget
            .try_admit(demand(1, 3 * GIB))
            .expect("4.5 + 3.5 of 9 GiB");
        assert!(budget.try_admit(demand(1, 4 * GIB)).is_none());
        drop(small);
        drop(big);
        // A guest larger than the whole budget runs alone instead of never.
        let huge = budget.try_admit(demand(1, 64 * GIB)).expect("runs alone");
        assert!(budget.try_admit(demand(1, GIB)).is_none());
        drop(huge);
    }

    #[tokio::test]
    async fn waiting_scenarios_start_in_the_order_given() {
        let budget = Budget::new(Capacity {
            cores: 2,
            memory: 24 * GIB,
        });
        let running = budget.admit(demand(1, GIB)).await;
        // A 4-vCPU scenario waits for both cores; a 1-vCPU one behind it must not overtake it.
        let four = tokio::spawn({
            let budget = budget.clone();
            async move { budget.admit(demand(4, GIB)).await }
        });
        tokio::task::yield_now().await;
        assert!(
            budget.try_admit(demand(1, GIB)).is_none(),
            "queued behind the 4-vCPU one"
        );
        drop(running);
        let four = four.await.expect("admitted once the core is free");
        assert!(budget.try_admit(demand(1, GIB)).is_none());
        drop(four);
    }

    #[test]
    fn available_memory_comes_from_meminfo() {
        // Lines of a real /proc/meminfo (Linux 6.1).
        let meminfo = "MemTotal:       24592400 kB\nMemFree:        19081436 kB\nMemAvailable:   22632056 kB\n";
        assert_eq!(mem_available(meminfo), Some(22632056 * 1024));
        assert_eq!(mem_available("MemTotal: 1 kB\n"), None);
    }
}
