module ergo_py/interop/gopeer

go 1.20

require ergo.services/ergo v0.0.0

// The build (tests/interop/gopeer.py) points this at the vendored source with
// `go mod edit -replace` in a copy under its cache; nothing is fetched.
