// Klantportaal: the citizen's own dossier (view `klant`), notices for sources that did not
// answer, and who looked at their data (inzage).
import {
  api, el, fill, frame, needSignIn, organisations, orgName, problemNotice, renderDossier,
  sourceNotices, formatMoment, notice, label, SECTION_TITLES,
} from './portaal.js';

const s = frame('klant.html');
const meldingen = document.getElementById('meldingen');
const dossierBox = document.getElementById('dossier');

async function loadDossier(names) {
  try {
    const { data } = await api('/v1/me/dossier');
    const notices = sourceNotices(data, names);
    if (!data.complete && notices.length === 0) {
      notices.push(notice('warn', 'Niet al uw gegevens konden worden opgehaald.', 'Probeer het later opnieuw.'));
    }
    fill(meldingen, notices);
    renderDossier(dossierBox, data, names);
  } catch (e) {
    fill(dossierBox, problemNotice(e, 'Uw gegevens konden niet worden opgehaald.'));
  } finally {
    dossierBox.removeAttribute('aria-busy');
  }
}

async function loadAccessLog(names) {
  const box = document.getElementById('inzage');
  document.getElementById('inzage-sectie').hidden = false;
  try {
    const { data } = await api('/v1/me/access-log');
    const entries = data.entries || [];
    if (!entries.length) {
      fill(box, el('p', { class: 'muted' }, 'Nog niemand heeft uw gegevens ingezien.'));
      return;
    }
    const rows = entries.map((e) => el('tr', {},
      el('td', {}, formatMoment(e.time)),
      el('td', {}, e.by === 'u zelf' ? 'U zelf' : `${e.organisation_name || orgName(names, e.organisation)}`),
      el('td', {}, (e.roles || []).join(', ') || '—'),
      el('td', {}, e.purpose_description || e.purpose || '—'),
      el('td', {}, (e.sections || []).map((x) => SECTION_TITLES[x] || label(x)).join(', '))));
    fill(box, el('div', { class: 'table-wrap' }, el('table', {},
      el('caption', {}, `De laatste ${entries.length} keer dat uw gegevens zijn ingezien`),
      el('thead', {}, el('tr', {}, ['Wanneer', 'Wie', 'Rol', 'Doel', 'Welke gegevens'].map((h) => el('th', { scope: 'col' }, h)))),
      el('tbody', {}, rows))));
  } catch (e) {
    fill(box, problemNotice(e, 'De inzage kon niet worden opgehaald.'));
  }
}

async function main() {
  if (!s || s.actor !== 'citizen') {
    dossierBox.removeAttribute('aria-busy');
    needSignIn(dossierBox, 'citizen');
    return;
  }
  const names = await organisations();
  await loadDossier(names);
  await loadAccessLog(names);
}

main();
