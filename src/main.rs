// glibc malloc took a quarter of a render's CPU (perf); mimalloc renders ~1.6x faster.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    singleuser_profiles::cli::main()
}
