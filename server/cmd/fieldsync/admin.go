package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"fieldsync/server/app"
	"fieldsync/server/auth"
	"fieldsync/server/domain"
)

// runAdmin serves `fieldsync admin users` and `fieldsync admin
// reset-password USER`: account chores for whoever runs the server, which
// work beside a running server (the store serialises the write).
func runAdmin(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	usage := errors.New("usage: fieldsync admin users [-data DIR | -db DB] | fieldsync admin reset-password [-data DIR | -db DB] [-stdin] USER")
	if len(args) == 0 {
		return usage
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("fieldsync admin "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg app.Config
	fs.StringVar(&cfg.DataDir, "data", "data", "data folder: SQLite file and local blob folder")
	dbFlag(fs, &cfg.DB)
	fromStdin := false
	if sub == "reset-password" {
		fs.BoolVar(&fromStdin, "stdin", false, "read the new password from the first line of standard input instead of making one")
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := applyEnv(fs); err != nil {
		return err
	}
	switch sub {
	case "users":
		if fs.NArg() != 0 {
			return usage
		}
	case "reset-password":
		if fs.NArg() != 1 {
			return usage
		}
	default:
		return fmt.Errorf("unknown admin command %q: %w", sub, usage)
	}
	st, err := app.OpenStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer st.Close()
	if sub == "users" {
		users, err := st.Users(ctx)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\t用户名\t姓名\t角色\t负责地点\t状态")
		for _, u := range users {
			state := "启用"
			if u.Disabled {
				state = "停用"
			}
			places := strings.Join(u.PlaceCodes, ",")
			if places == "" {
				places = "-"
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", u.ID, u.Username, u.DisplayName, roleName(u.Role), places, state)
		}
		return tw.Flush()
	}
	name := fs.Arg(0)
	u, err := st.UserByName(ctx, name)
	if errors.Is(err, domain.ErrNotFound) {
		return fmt.Errorf("no user %q (fieldsync admin users lists them): %w", name, err)
	}
	if err != nil {
		return err
	}
	pw, made := "", false
	if fromStdin {
		line, err := bufio.NewReader(stdin).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("read password: %w", err)
		}
		pw = strings.TrimRight(line, "\r\n")
	} else {
		pw, made = auth.NewToken()[:16], true
	}
	h, err := auth.HashPassword(pw)
	if err != nil {
		return err
	}
	if err := st.SetPassword(ctx, u.ID, h); err != nil {
		return err
	}
	if made {
		fmt.Fprintf(stdout, "%s 的新密码：%s\n", u.Username, pw)
	} else {
		fmt.Fprintf(stdout, "%s 的密码已更改\n", u.Username)
	}
	return nil
}

func roleName(r domain.Role) string {
	switch r {
	case domain.RoleAdmin:
		return "管理员"
	case domain.RoleSupervisor:
		return "督导"
	case domain.RoleFieldWorker:
		return "网格员"
	}
	return string(r)
}
