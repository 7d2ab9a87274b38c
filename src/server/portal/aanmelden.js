// Demo sign-in: pick a fictitious citizen or employee; the gateway mints a short-lived token.
import { api, el, fill, frame, session, problemNotice, notice } from './portaal.js';

frame('aanmelden.html');
const meldingen = document.getElementById('meldingen');

async function signIn(account, button) {
  button.disabled = true;
  try {
    const { data } = await api('/portaal/demo/sign-in', { json: { account: account.id }, token: false });
    session.set({
      token: data.token,
      actor: data.actor,
      label: data.label,
      organisation: data.organisation || null,
      organisation_name: data.organisation_name || null,
      demo: true,
      expires_at: Date.now() + (data.expires_in - 30) * 1000,
    });
    location.href = data.actor === 'citizen' ? '/portaal/klant.html' : '/portaal/medewerker.html';
  } catch (e) {
    button.disabled = false;
    fill(meldingen, problemNotice(e, 'Aanmelden lukte niet.'));
  }
}

async function main() {
  let accounts;
  try {
    ({ data: { accounts } } = await api('/portaal/demo/accounts', { token: false }));
  } catch (e) {
    fill(meldingen, e.status === 404
      ? notice('error', 'Hier is geen demo-aanmelding.', 'Meld u aan via de inlogvoorziening van uw organisatie.')
      : problemNotice(e));
    return;
  }
  for (const [listId, actor] of [['burgers', 'citizen'], ['medewerkers', 'employee']]) {
    const list = document.getElementById(listId);
    fill(list, accounts.filter((a) => a.actor === actor).map((a) => {
      const b = el('button', { type: 'button', dataset: { account: a.id } }, a.label);
      b.addEventListener('click', () => signIn(a, b));
      return el('li', {}, b);
    }));
  }
}

main();
