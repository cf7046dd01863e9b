fn main() -> std::process::ExitCode {
    // A panic's message may quote host output: printed escaped (untrusted.rs).
    rampart::untrusted::install_panic_hook();
    rampart::cli::main()
}
