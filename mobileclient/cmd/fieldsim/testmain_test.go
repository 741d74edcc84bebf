package main

import (
	"context"
	"fmt"
	"os"
	"testing"
)

// TestMain prepares one data folder with the demo county (and households
// in its second village) that every in-process server of the tests starts
// from.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "fieldsim-template-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := prepareData(context.Background(), dir, populateOtherVillage(40)); err != nil {
		fmt.Fprintln(os.Stderr, "data template:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	dataTemplate = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
