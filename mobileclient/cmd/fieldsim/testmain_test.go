package main

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"
)

// TestMain builds the fieldsync binary once and prepares one data folder
// with the demo county (and households in its second village) with
// `fieldsync seed`, which every server of the tests starts from.
func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	defer removeBuiltBinary()
	bin, err := fieldsyncBinary(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fieldsync binary:", err)
		return 1
	}
	dir, err := os.MkdirTemp("", "fieldsim-template-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	spec := otherVillageHouseholds(40)
	spec.Demo = true
	if _, err := seedData(ctx, bin, dir, "", spec); err != nil {
		fmt.Fprintln(os.Stderr, "data template:", err)
		return 1
	}
	dataTemplate = dir
	return m.Run()
}
