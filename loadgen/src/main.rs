//! loadgen: the benchmark harness. It drives the broker through the project's
//! client; it arrives with the server and client (see the project's issues).

fn main() {
    eprintln!("loadgen: no workload is implemented yet; it needs the broker's server and client");
    std::process::exit(2);
}
