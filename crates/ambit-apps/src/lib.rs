//! Sample workloads built into the ambit binary: `ambit app echo` and `ambit app load`.
