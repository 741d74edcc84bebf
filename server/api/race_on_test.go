//go:build race

package api_test

// raceEnabled: the race detector makes requests about ten times slower;
// load tests scale down under it.
const raceEnabled = true
