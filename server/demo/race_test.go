//go:build race

package demo

// raceEnabled says the tests run under the race detector, which makes
// hashing a picture some twelve times slower.
const raceEnabled = true
