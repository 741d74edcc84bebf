//go:build race

package mobileclient

const raceEnabled = true
