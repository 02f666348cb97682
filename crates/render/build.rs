// include_dir! cannot tell cargo that the embedded templates changed; this does.
fn main() {
    println!("cargo:rerun-if-changed=../../templates");
}
