//go:build race

package tiling

// raceEnabled makes slow randomized tests run fewer trials under the race
// detector, which slows them tenfold and adds nothing to single-goroutine code.
const raceEnabled = true
