//! `ws_stack_bench`: compares WebSocket stacks for the server's audio relay
//! (see `audin_loadgen::stack`).

fn main() -> std::process::ExitCode {
    audin_loadgen::stack::main()
}
