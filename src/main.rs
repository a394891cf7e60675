fn main() {
    println!("toolhive-operator");
}
