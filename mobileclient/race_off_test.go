//go:build !race

package mobileclient

const raceEnabled = false
