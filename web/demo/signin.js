// The sign-in forms the demo pages share: a username and password (`login`), or a pasted
// token. Both forms are cleared of their secret once used; `start(client)` takes over.

import { SwitchboardClient } from './switchboard.js';

const $ = (id) => document.getElementById(id);

/**
 * Wires `#login-form` and `#token-form`: each makes a client with `create(options)` and hands
 * it to `start`; a failed login is shown in `#signin-error`.
 * @param {(client: SwitchboardClient) => Promise<void>} start
 * @param {(options?: object) => SwitchboardClient} [create]
 */
export function wireSignIn(start, create = (options) => new SwitchboardClient(options)) {
  $('login-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const client = create();
    try {
      await client.login($('username').value.trim(), $('password').value);
    } catch (e) {
      $('signin-error').textContent = `Sign-in failed: ${e.message}`;
      return;
    } finally {
      $('password').value = '';
    }
    await start(client);
  });

  $('token-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const token = $('token').value.trim();
    $('token').value = '';
    await start(create({ token }));
  });
}
