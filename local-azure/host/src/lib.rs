//! local-azure's Azure Functions host (skeleton; built in "local-azure, part 2").
