//! Cluster DNS: answers A queries for services and pods of the local cluster.
