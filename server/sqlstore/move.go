package sqlstore

import (
	"context"
	"fmt"
)

// txer is what a write transaction offers: *sql.Tx, or the writer's
// statement-cached cachedTx.
type txer interface {
	execer
	querier
}

// householdDependents are the rows that travel with a household when it
// changes place: a device receives them with it and removes them with it
// (sync rule 5).
var householdDependents = []struct {
	entity string
	ids    string // ids of the household's rows: they leave the old place
	enter  string // those a new device receives (as a full pull sends them)
	update string // moves them to a place
}{
	{"visit", `SELECT id FROM visits WHERE household_id = ? ORDER BY id`,
		`SELECT id FROM visits WHERE household_id = ? ORDER BY id`,
		`UPDATE visits SET place_code = ? WHERE household_id = ?`},
	{"conflict", `SELECT id FROM conflicts WHERE household_id = ? ORDER BY id`,
		`SELECT id FROM conflicts WHERE household_id = ? AND state = 'open' ORDER BY id`,
		`UPDATE conflicts SET place_code = ? WHERE household_id = ?`},
	{"task", `SELECT id FROM tasks WHERE household_id = ? ORDER BY id`,
		`SELECT id FROM tasks WHERE household_id = ? AND state = 'open' ORDER BY id`,
		`UPDATE tasks SET place_code = ? WHERE household_id = ?`},
}

// moveHouseholdDependents moves a household's visits, conflicts and tasks
// from place from to place to, and logs each as having left from and
// entered to. A device that sees from but not to then deletes them, and
// one that sees to but not from receives them, exactly as when a whole
// villager group enters or leaves its scope. The household's own log
// entries are the caller's, and come first.
func moveHouseholdDependents(ctx context.Context, x txer, now, householdID, from, to string) error {
	for _, d := range householdDependents {
		ids, err := queryStrings(ctx, x, d.ids, householdID)
		if err != nil {
			return fmt.Errorf("move %ss: %w", d.entity, err)
		}
		entering, err := queryStrings(ctx, x, d.enter, householdID)
		if err != nil {
			return fmt.Errorf("move %ss: %w", d.entity, err)
		}
		for _, id := range ids {
			if _, err := logChange(x, now, d.entity, id, from, "moved_out"); err != nil {
				return err
			}
		}
		for _, id := range entering {
			if _, err := logChange(x, now, d.entity, id, to, "put"); err != nil {
				return err
			}
		}
		if len(ids) > 0 {
			if _, err := x.ExecContext(ctx, d.update, to, householdID); err != nil {
				return fmt.Errorf("move %ss: %w", d.entity, err)
			}
		}
	}
	return nil
}
