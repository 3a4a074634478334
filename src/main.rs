fn main() {
    print!("{}", esm_operator::crd::crd_yaml());
}
