//! The control plane: the CA service (and later the config store and workload xDS).
