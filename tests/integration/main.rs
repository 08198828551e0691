//! Integration tests: the real `doppel` binary, started as separate processes on loopback ports,
//! driven over HTTP and through the CLI.

mod at_rest;
mod backup;
mod blobs;
mod callers;
mod cluster;
mod console;
mod crashes;
mod durability;
mod hostile;
mod interfaces;
mod issuer;
mod layout;
mod limits;
mod metrics;
mod operator;
mod packaging;
mod partition;
mod placement;
mod recovery;
mod redeploy;
mod rotation;
mod services;
mod signatures;
mod support;
mod trust;
mod twin;
