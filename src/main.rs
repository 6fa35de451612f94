fn main() {
    std::process::exit(blobgc::cli::main());
}
