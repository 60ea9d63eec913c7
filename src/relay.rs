//! `corefn-relay PID`: the two waiting processes of a confined language
//! host (the one the worker holds, and the first of the host's pid
//! namespace) exec this small program instead of living on as copies of
//! the worker. It waits for its child PID, reaping any other, and ends as
//! that child ended ([`corefn::runtimes::sandbox::relay`]).

fn main() {
    corefn::runtimes::sandbox::relay();
}
